"""The index's own recall curve, measured on its calibration sample, and search settings chosen from it.

:func:`measure_curve` runs the index's search on the sample queries (:mod:`.calibration`) over a grid of
``oversample`` and, with IVF, ``nprobe`` values and records recall@10 (each query's own row excluded,
ties with the 10th exact neighbour counted as hits), its standard error over queries and the wall time.
It also records, per ``nprobe``, the share of the exact neighbours among the scan's candidates at the
largest oversample: the recall that exact rescoring of the same candidates would reach, which tells
whether the rescoring codes or the scan limit the recall.

:meth:`RecallCurve.choose` picks the cheapest measured setting whose recall, less two standard errors and
:data:`RECALL_MARGIN`, meets a target; when none does, it picks the best one and explains, in a warning
text, what limits the recall and what would reach the target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import CorruptData
from .calibration import CalibrationSample

#: Recall is estimated at this many results (``stats()["estimated_recall"]`` is recall@10).
RECALL_K = 10
#: Oversample values measured (the last is the cost cap: at most 64·k candidates are rescored).
OVERSAMPLE_GRID = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Fewest usable sample queries for an estimate.
MIN_QUERIES = 32
#: Systematic allowance between the sample's recall (rows of the index as queries) and that of unseen
#: queries, on top of two standard errors of the sample mean, when a setting is chosen to meet a target:
#: the sample was up to 0.027 optimistic across the sets of benchmarks/RESULTS.md, section 8.
RECALL_MARGIN = 0.025
#: Gains below this (per grid step) count as saturated: larger settings are not measured.
SATURATED = 0.001
#: Oversample whose candidates are also counted once (scan only), to say what a larger explicit
#: ``oversample`` with exact rescoring would reach when the cost cap above does not reach a target.
WIDE_OVERSAMPLE = 4 * OVERSAMPLE_GRID[-1]
#: Store blob holding the measured curve.
BLOB = "recall_curve"

SearchIds = Callable[[np.ndarray, int, int, int | None], np.ndarray]


@dataclass(frozen=True)
class CurvePoint:
    """Recall@10 of the sample at one setting (``nprobe`` is ``None`` without IVF)."""

    nprobe: int | None
    oversample: int
    recall: float
    stderr: float
    seconds: float

    def lower(self) -> float:
        """The recall this setting is trusted to reach on unseen queries."""
        return self.recall - 2 * self.stderr - RECALL_MARGIN


@dataclass(frozen=True)
class SearchChoice:
    """Search settings chosen for a recall target, the estimate there, and why a target is out of reach."""

    oversample: int
    nprobe: int | None
    estimated_recall: float
    target_recall: float | None
    warning: str | None = None


@dataclass(frozen=True)
class RecallCurve:
    """Measured points, the candidate recall per ``nprobe`` at the largest oversample, and the context."""

    points: tuple[CurvePoint, ...]
    candidate_recall: dict[int | None, float]
    n_rows: int
    n_queries: int
    rescore: str | None
    wide_recall: float = float("nan")  # exact-rescoring recall of WIDE_OVERSAMPLE·k candidates, last nprobe

    # ------------------------------------------------------------ lookups
    def at(self, oversample: int, nprobe: int | None) -> CurvePoint:
        """The measured point nearest below ``(oversample, nprobe)``: settings past a saturated step were not
        measured and recall does not fall as either grows."""
        row = self._row(nprobe)
        below = [p for p in row if p.oversample <= oversample]
        return max(below, key=lambda p: p.oversample) if below else min(row, key=lambda p: p.oversample)

    def _row(self, nprobe: int | None) -> list[CurvePoint]:
        """The points measured at the largest measured ``nprobe`` not above ``nprobe``."""
        probes = sorted({p.nprobe or 0 for p in self.points})
        want = 0 if nprobe is None else int(nprobe)
        p_near = max([p for p in probes if p <= want], default=probes[0])
        return [p for p in self.points if (p.nprobe or 0) == p_near]

    def choose(self, target: float, *, oversample: int | None = None, nprobe: int | None = None) -> SearchChoice:
        """The cheapest measured setting meeting ``target`` (``oversample``/``nprobe`` given = fixed).  Out of
        reach: the best setting, with a warning text."""
        options = []
        probes = sorted({p.nprobe for p in self.points}, key=lambda v: v or 0) if nprobe is None else [nprobe]
        for p in probes:
            sizes = sorted({q.oversample for q in self._row(p)}) if oversample is None else [oversample]
            options += [(o, p, self.at(o, p)) for o in sizes]
        meeting: dict[int | None, tuple] = {}  # per nprobe, the smallest oversample meeting the target
        for opt in options:
            if opt[2].lower() >= target and (opt[1] not in meeting or opt[0] < meeting[opt[1]][0]):
                meeting[opt[1]] = opt
        if meeting:  # across nprobe values, the fastest as measured
            o, p, point = min(meeting.values(), key=lambda opt: (opt[2].seconds, opt[0]))
            return SearchChoice(o, p, point.recall, target)
        o, p, point = max(options, key=lambda opt: (round(opt[2].recall, 3), -opt[2].seconds))
        # The full margin picks settings; a warning needs the best setting to miss the target by half of it,
        # so an index whose best estimate clears the target comfortably does not warn on every search.
        likely_short = point.recall - 2 * point.stderr - RECALL_MARGIN / 2 < target
        return SearchChoice(o, p, point.recall, target, self._out_of_reach(target, point) if likely_short else None)

    def _out_of_reach(self, target: float, best: CurvePoint) -> str:
        where = f"oversample {best.oversample}" + ("" if best.nprobe is None else f", nprobe {best.nprobe}")
        exact = max(self.candidate_recall.values(), default=float("nan"))
        short = "below the target" if best.recall < target else "too close to be sure of the target"
        text = (f"vqsearch: estimated recall@{RECALL_K} is {best.recall:.3f} at best ({where}), {short} recall "
                f"{target:.3f} (measured on {self.n_queries} sample queries, ±{2 * best.stderr:.3f}). ")
        finer = ("preset='accurate' (float16 rescoring, rescore='float16') with target_recall="
                 f"{target:g}")
        if self.rescore == "float16":  # already the finest rescoring: only the scan can change
            finer = "the float16 rescoring this index has"
        if exact >= target + RECALL_MARGIN:
            limit = ("The scan codes alone rank the results" if self.rescore is None
                     else f"The rescoring codes {self.rescore!r} limit it")
            return text + (f"{limit}: exact rescoring of the same candidates reaches an estimated recall of "
                           f"{exact:.3f}; {finer} approaches it.")
        text += (f"The scan keeps only an estimated {exact:.3f} of the true neighbours among {OVERSAMPLE_GRID[-1]}·k "
                 f"candidates, so finer rescoring alone cannot reach it")
        if self.wide_recall >= target + RECALL_MARGIN:
            return text + (f"; {finer} and an explicit oversample={WIDE_OVERSAMPLE} (exact rescoring of its "
                           f"candidates: an estimated {self.wide_recall:.3f}) reaches it.")
        wide = self.wide_recall
        among = "" if np.isnan(wide) else f" (an estimated {wide:.3f} among {WIDE_OVERSAMPLE}·k)"
        return text + f"{among}: finer scan codes are needed, with {finer}."

    # ------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        return json.dumps({"points": [asdict(p) for p in self.points],
                           "candidate_recall": [[k, v] for k, v in self.candidate_recall.items()],
                           "n_rows": self.n_rows, "n_queries": self.n_queries, "rescore": self.rescore,
                           "wide_recall": None if np.isnan(self.wide_recall) else self.wide_recall}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> RecallCurve:
        try:
            d = json.loads(blob)
            return cls(tuple(CurvePoint(**p) for p in d["points"]), {k: float(v) for k, v in d["candidate_recall"]},
                       int(d["n_rows"]), int(d["n_queries"]), d["rescore"],
                       float("nan") if d.get("wide_recall") is None else float(d["wide_recall"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"the recall curve is unreadable: {exc}") from None


# ---------------------------------------------------------------- measuring
def nprobe_grid(nlist: int | None, extra: int | None = None) -> list[int | None]:
    """``nprobe`` values to measure: powers of two from nlist/256 up to nlist (and ``extra``)."""
    if nlist is None:
        return [None]
    grid, p = set(), max(1, nlist // 256)
    while p < nlist:
        grid.add(p)
        p *= 2
    grid.add(nlist)
    if extra is not None:
        grid.add(min(int(extra), nlist))
    return sorted(grid)


def measure_curve(sample: CalibrationSample, search_ids: SearchIds, candidate_ids: SearchIds,
                  contains: Callable[[np.ndarray], np.ndarray], *, nlist: int | None, n_rows: int,
                  rescore: str | None, extra_oversample: int | None = None,
                  extra_nprobe: int | None = None) -> RecallCurve | None:
    """The recall curve of an index (see the module docstring); ``None`` when the sample has fewer than
    :data:`MIN_QUERIES` queries with ``k`` live exact neighbours or the index is too small.

    ``search_ids(queries, k, oversample, nprobe)`` is the index's search (ids, best first) and
    ``candidate_ids`` the same for the scan's candidates before rescoring; ``contains(ids)`` says which
    ids are live rows.
    """
    k = RECALL_K
    if n_rows < k + 1:
        return None
    flat_ids = sample.truth_ids.ravel()
    live = contains(np.maximum(flat_ids, 0).astype(np.uint64)).reshape(sample.truth_ids.shape) & (sample.truth_ids >= 0)
    usable, _, _ = sample.exact_top(k, live)
    if usable.size < MIN_QUERIES:
        return None
    queries, self_ids = sample.queries[usable], sample.self_ids[usable]
    truth_ids = np.where(live[usable], sample.truth_ids[usable], -1)
    truth_scores = np.where(live[usable], sample.truth_scores[usable], -np.inf)
    kth = np.sort(truth_scores, axis=1)[:, ::-1][:, k - 1]  # the k-th best live score
    grid = sorted(set(OVERSAMPLE_GRID) | ({int(extra_oversample)} if extra_oversample else set()))
    if rescore is None:
        grid = [1]
    search_ids(queries, k + 1, grid[0], nprobe_grid(nlist)[0])  # warm-up: compilation and caches, not timed
    wanted = np.take_along_axis(truth_ids, np.argsort(-truth_scores, axis=1, kind="stable")[:, :k], 1)

    def found_share(oversample: int, nprobe: int | None) -> float:
        """Share of the exact top k among the candidates the scan keeps for rescoring."""
        cands = _without_self(candidate_ids(queries, k + 1, oversample, nprobe), self_ids, None)
        return float((wanted[:, :, None] == cands[:, None, :]).any(axis=2).mean())

    points: list[CurvePoint] = []
    candidate: dict[int | None, float] = {}
    best_before = -1.0
    for p in nprobe_grid(nlist, extra_nprobe):
        row: list[CurvePoint] = []
        for o in grid:
            t0 = time.perf_counter()
            found = search_ids(queries, k + 1, o, p)
            seconds = time.perf_counter() - t0
            per_query = _hits(_without_self(found, self_ids, k), truth_ids, truth_scores, kth) / k
            row.append(CurvePoint(p, o, float(per_query.mean()),
                                  float(per_query.std(ddof=1) / np.sqrt(per_query.size)), seconds))
            recent = row[-3:]
            gains = [b.recall - a.recall for a, b in zip(recent, recent[1:])]
            if row[-1].recall >= 1 - SATURATED or (len(gains) == 2 and max(gains) < SATURATED):
                break
        points += row
        candidate[p] = found_share(OVERSAMPLE_GRID[-1], p)
        best = max(pt.recall for pt in row)
        if best >= 1 - SATURATED or best - best_before < SATURATED:
            break
        best_before = best
    wide = found_share(WIDE_OVERSAMPLE, p) if candidate[p] < 1 - SATURATED else candidate[p]
    return RecallCurve(tuple(points), candidate, int(n_rows), int(usable.size), rescore, wide)


def _without_self(found: np.ndarray, self_ids: np.ndarray, k: int | None) -> np.ndarray:
    """Each row of ``found`` without its query's own id (kept order), cut to ``k`` columns (``None`` = all but one)."""
    is_self = found == self_ids[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    out = np.take_along_axis(np.where(is_self, -1, found), order, 1)
    return out[:, : (found.shape[1] - 1 if k is None else k)]


def _hits(found: np.ndarray, truth_ids: np.ndarray, truth_scores: np.ndarray, kth: np.ndarray) -> np.ndarray:
    """Per query, results whose exact score (known for ids in the neighbour list) reaches the k-th best."""
    match = (found[:, :, None] == truth_ids[:, None, :]) & (found[:, :, None] >= 0)
    score = np.where(match, truth_scores[:, None, :], -np.inf).max(axis=2)
    tol = 1e-6 * np.maximum(np.abs(kth), 1e-12)
    return (score >= (kth - tol)[:, None]).sum(axis=1).astype(np.float64)
