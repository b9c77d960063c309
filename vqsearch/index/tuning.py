"""Self-calibration of an index: the sample, the measured recall curve and the search settings they give.

:class:`RecallTuning` is what :class:`vqsearch.Index` holds: the :class:`.calibration.CalibrationSample`
(kept exact at every write), the :class:`.recall_curve.RecallCurve` (re-measured when the index has
doubled or halved since the last measurement, and at compaction) and the settings chosen from it for
the index's ``target_recall``.  Both are store blobs, committed through the store's public API by the
index.  The object is immutable: a write builds a new one, so concurrent searches see one consistent state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import calibration, recall_curve
from .calibration import CalibrationSample
from .config import IndexConfig
from .metric import Metric
from .recall_curve import RecallCurve, SearchChoice, SearchIds

#: The curve is measured again once the live row count has changed by this factor since the last time.
REMEASURE_GROWTH = 2.0


#: Store blobs of the calibration sample and recall curve: per-index measurements, never part of the trained
#: state that other indexes adopt (:meth:`vqsearch.Index.trained_state`).
TUNING_BLOBS = frozenset({calibration.BLOB, calibration.QUERIES_BLOB, recall_curve.BLOB})


class RecallWarning(UserWarning):
    """The index cannot reach its recall target with its codes (the text names what would)."""


@dataclass(frozen=True)
class RecallTuning:
    """The calibration state of one index version (see the module docstring)."""

    sample: CalibrationSample | None = None
    curve: RecallCurve | None = None

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes]) -> RecallTuning:
        sample = CalibrationSample.from_blobs(blobs)
        curve = RecallCurve.from_bytes(blobs[recall_curve.BLOB]) if recall_curve.BLOB in blobs else None
        return cls(sample, curve)

    def blobs(self) -> dict[str, bytes]:
        out = {}
        if self.sample is not None:
            out.update(self.sample.to_blobs())
        if self.curve is not None:
            out[recall_curve.BLOB] = self.curve.to_bytes()
        return out

    # ------------------------------------------------------------ writes
    def with_training_sample(self, x: np.ndarray) -> RecallTuning:
        """Draw the sample from a training set (prepared floats; not rows of the index yet)."""
        if self.sample is not None:
            return self
        return replace(self, sample=CalibrationSample.draw(x))

    def after_write(self, x: np.ndarray, ids: np.ndarray, metric: Metric) -> RecallTuning:
        """The state once prepared rows ``x`` with ``ids`` are written (the sample is drawn from the first batch)."""
        sample = self.sample if self.sample is not None else CalibrationSample.draw(x, ids)
        return replace(self, sample=sample.merged(x, ids, metric))

    def measure_due(self, n_rows: int) -> bool:
        """Whether the curve should be measured for an index of ``n_rows`` live rows."""
        if self.sample is None or n_rows <= recall_curve.RECALL_K:
            return False
        if self.curve is None:
            return True
        ratio = n_rows / max(1, self.curve.n_rows)
        return ratio >= REMEASURE_GROWTH or ratio <= 1 / REMEASURE_GROWTH

    def measured(self, config: IndexConfig, search_ids: SearchIds, candidate_ids: SearchIds,
                 contains: Callable[[np.ndarray], np.ndarray], n_rows: int) -> RecallTuning:
        """The state with a freshly measured curve (unchanged when the sample cannot give one)."""
        if self.sample is None:
            return self
        fixed_o, fixed_p = fixed_settings(config)
        curve = recall_curve.measure_curve(
            self.sample, search_ids, candidate_ids, contains, nlist=nlist_of(config), n_rows=n_rows,
            rescore=config.rescore, extra_oversample=fixed_o or config.oversample,
            extra_nprobe=fixed_p or (config.ivf.nprobe if config.ivf is not None else None))
        return self if curve is None else replace(self, curve=curve)

    # ------------------------------------------------------------ searches
    def defaults(self, config: IndexConfig) -> SearchChoice:
        """The default search settings: chosen from the curve for ``config.target_recall``, except those the
        index was created with explicitly; the configured ones while there is no curve or no target."""
        if self.curve is None or config.target_recall is None:
            o, p = config.oversample, default_nprobe(config)
            return SearchChoice(o, p, float("nan") if self.curve is None else self.curve.at(o, p).recall,
                                config.target_recall)
        fixed_o, fixed_p = fixed_settings(config)
        return self.curve.choose(config.target_recall, oversample=fixed_o, nprobe=fixed_p)

    def settings(self, config: IndexConfig, target: float | None, oversample: int | None,
                 nprobe: int | None) -> SearchChoice:
        """Settings of one search: given values win; the others meet ``target``, or are the defaults."""
        if nlist_of(config) is None:
            nprobe = None
        if target is None or self.curve is None:
            base = self.defaults(config) if oversample is None or nprobe is None else None
            o = base.oversample if oversample is None else oversample
            p = base.nprobe if nprobe is None and base is not None else nprobe
            estimate = float("nan") if self.curve is None else self.curve.at(o, p).recall
            warning = None
            if target is not None:
                warning = (f"vqsearch: no recall estimate for target recall {target:g} yet: the index calibrates "
                           "itself once it holds more than a few rows written with their float vectors; "
                           "searching with the default settings")
            return SearchChoice(o, p, estimate, target, warning)
        return self.curve.choose(target, oversample=oversample, nprobe=nprobe)

    @staticmethod
    def warn(choice: SearchChoice, stacklevel: int = 3) -> None:
        """Emit the choice's warning (a target out of reach) as a :class:`RecallWarning`, if it has one."""
        if choice.warning is not None:
            warnings.warn(choice.warning, RecallWarning, stacklevel=stacklevel)

    def stats(self, config: IndexConfig) -> dict[str, Any]:
        """``estimated_recall`` (recall@10 at the default settings; ``None`` without a curve), the target, the
        default settings and the warning text when the target is out of reach."""
        choice = self.defaults(config)
        estimate = None if self.curve is None else round(float(choice.estimated_recall), 4)
        return {"estimated_recall": estimate, "target_recall": config.target_recall,
                "recall_warning": choice.warning,
                "search_defaults": {"oversample": choice.oversample, "nprobe": choice.nprobe},
                "calibration": None if self.curve is None else {
                    "queries": self.curve.n_queries, "rows": self.curve.n_rows,
                    "points": len(self.curve.points),
                    "exact_rescoring_recall": round(max(self.curve.candidate_recall.values()), 4)}}


def nlist_of(config: IndexConfig) -> int | None:
    """IVF list count of a trained index, ``None`` for a flat scan (one list is a flat scan too)."""
    if config.ivf is None or config.ivf.nlist <= 1:
        return None
    return int(config.ivf.nlist)


def default_nprobe(config: IndexConfig) -> int | None:
    """The configured ``nprobe`` of an IVF index (``None`` for a flat scan)."""
    return None if nlist_of(config) is None else int(config.ivf.nprobe)


def fixed_settings(config: IndexConfig) -> tuple[int | None, int | None]:
    """``(oversample, nprobe)`` the index was created with explicitly (``None`` = chosen from the curve)."""
    o = None if "oversample" in config.tuned else config.oversample
    p = None
    if config.ivf is not None and "nprobe" not in config.tuned and nlist_of(config) is not None:
        p = config.ivf.nprobe
    return o, p
