"""The compression plan: which format each tensor gets (fixed formats, patterns, or bit allocation).

:func:`plan_formats` maps every tensor of the source to a canonical format spec.  Non-float
tensors are ``raw``; small tensors (and every 0-D/1-D tensor) ``float16`` unless a pattern
names them; the others take the format of the first matching pattern, or, with ``target_bits``,
the allocator's choice (:mod:`.allocate`): every candidate format is measured on a row sample of
each tensor (nearest rounding), weighted by the tensor's sensitivity (Fisher with calibration,
the data-free proxy without), and the cheapest-distortion mix under the bit budget is picked.
"""

from __future__ import annotations

import fnmatch
import logging
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput, InvalidSpec
from . import allocate as _alloc
from .calibration import CalibrationStats
from .codec import decode_tensor, encode_tensor, estimate_bits, matrix_shape
from .formats import WeightFormat, parse_format
from .safetensors_io import SafetensorsSource, TensorEntry

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "e8p:bits=2"
#: Tensors with fewer elements (and every 0-D/1-D tensor) are kept in float16 unless allocated.
SMALL_TENSOR = 4096
#: Candidate formats of the allocator: 2 … 8 bits, all with RHT and one scale per row.  Trellis
#: (L = 12) at the integer rates (it has lower error than E8 at equal rate), E8 balls in between,
#: RHT'd uniform integers above 4 bits.  Nothing below 2 bits: like Orr et al. (quantizers.md §7.3)
#: we clip at 2 bits — the second-order (Fisher) model underestimates the damage of very coarse
#: codes (RESULTS.md §4: MiniLM's word embeddings at 1.5 bits cost far more mean cosine than the
#: model predicts from their damage at 2 bits).
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "trellis:bits=2,L=12", "e8:bits=2.25", "e8:bits=2.5", "e8:bits=2.75", "trellis:bits=3,L=12",
    "e8:bits=3.25", "e8:bits=3.5", "e8:bits=3.75", "trellis:bits=4,L=12", "int:bits=5,rht=true,block=0",
    "int:bits=6,rht=true,block=0", "int:bits=8,rht=true,block=0",
)
#: Added to the default candidates only when a target is infeasible with them (e.g. 2.0 bits on
#: average, where per-row scales and float16 leftovers already take part of the budget).
LOW_RATE_CANDIDATES: tuple[str, ...] = ("e8:bits=1.75", "e8:bits=1.5", "e8:bits=1.25")
#: Values per tensor used to measure each candidate's error for the allocator.
ALLOC_SAMPLE = 1 << 15
PLAIN = ("raw", "float16", "float32")

_TAG_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 32, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
             "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8}


def pattern_format(name: str, mapping: Mapping[str, str]) -> str | None:
    """The spec of the first glob pattern of ``mapping`` that matches ``name`` (None: no match)."""
    for pattern, spec in mapping.items():
        if pattern == name or fnmatch.fnmatchcase(name, pattern):
            return spec
    return None


def lookup_stat(d: Mapping[str, Any], name: str) -> Any:
    """Calibration statistics are keyed by module parameter names; the file may add a prefix."""
    if name in d:
        return d[name]
    hits = [k for k in d if name.endswith("." + k)]
    return d[hits[0]] if len(hits) == 1 else None


def _plain_bits(e: TensorEntry, spec: str) -> int:
    """Stored bits of an unquantised tensor (raw keeps the source width; bfloat16 is read as float32)."""
    if spec == "raw":
        return _TAG_BITS[e.dtype] * e.numel
    return (16 if spec == "float16" else 32) * e.numel


def _is_small(e: TensorEntry, small: int) -> bool:
    return len(e.shape) < 2 or e.numel < small


def _fisher(stats: CalibrationStats, name: str) -> float | None:
    key = name if name in stats.fisher_sum else lookup_stat({k: k for k in stats.fisher_sum}, name)
    return None if key is None else stats.fisher_mean(key)


def _sample_rows(w: np.ndarray, name: str, rows_multiple: int = 16) -> np.ndarray:
    m, n = matrix_shape(w.shape)
    mat = w.reshape(m, n)
    want = max(rows_multiple, (ALLOC_SAMPLE // max(n, 1)) // rows_multiple * rows_multiple)
    if want >= m:
        return mat
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return mat[np.sort(rng.choice(m, want, replace=False))]


def _measure(sample: np.ndarray, fmt: WeightFormat, e: TensorEntry, seed: int) -> _alloc.Option:
    """Relative MSE of ``fmt`` on a row sample (nearest rounding) and its exact bits on the whole tensor."""
    enc = encode_tensor(sample, fmt, name=e.name, seed=seed)
    err = np.mean((sample.astype(np.float64) - decode_tensor(enc.arrays, enc.meta)) ** 2)
    rel = float(err) / (float(np.mean(np.square(sample, dtype=np.float64))) or 1.0)
    state = int(enc.arrays["state"].nbytes) if "state" in enc.arrays else 0
    return _alloc.Option(fmt.spec, float(estimate_bits(fmt, e.shape, state_bytes=state)), rel)


def plan_formats(
    source: SafetensorsSource,
    fmt_map: Mapping[str, str],
    target_bits: float | None,
    mode: str | None,
    candidates: Sequence[str],
    stats: CalibrationStats | None,
    small: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Per-tensor canonical format specs, plus the allocation report when allocating."""
    plan: dict[str, str] = {}
    free: list[TensorEntry] = []
    explicit = {k: v for k, v in fmt_map.items() if k != "*"}
    for e in source.entries():
        if not e.is_float:
            plan[e.name] = "raw"
        elif target_bits is not None and pattern_format(e.name, explicit) is None and not _is_small(e, small):
            free.append(e)
        elif _is_small(e, small) and pattern_format(e.name, explicit) is None:
            plan[e.name] = "float16"
        else:
            plan[e.name] = parse_format(pattern_format(e.name, fmt_map) or DEFAULT_FORMAT).spec
    if target_bits is None:
        return plan, None
    if not free:
        raise InvalidInput("target_bits was given but no tensor is left for the allocator")
    mode = mode or ("fisher" if stats is not None else "proxy")
    if mode not in ("fisher", "proxy"):
        raise InvalidSpec(f"allocate must be 'fisher', 'proxy' or None, got {mode!r}")
    if mode == "fisher" and stats is None:
        raise InvalidSpec("allocate='fisher' needs calibration texts (or use allocate='proxy')")
    report = _allocate(source, plan, free, target_bits, mode, candidates, stats, seed, progress)
    return plan, report


def _allocate(source: SafetensorsSource, plan: dict[str, str], free: list[TensorEntry], target_bits: float,
              mode: str, candidates: Sequence[str], stats: CalibrationStats | None, seed: int,
              progress: bool) -> dict[str, Any]:
    """Fill ``plan`` for the ``free`` tensors under the budget; returns the allocation report."""
    cands = [parse_format(c) for c in candidates]
    total_params = sum(e.numel for e in source.entries())
    fixed_bits = sum(_plain_bits(e, plan[e.name]) for e in source.entries() if plan.get(e.name) in PLAIN)
    pinned_bits = sum(estimate_bits(plan[e.name], e.shape, state_bytes=256) for e in source.entries()
                      if e.name in plan and plan[e.name] not in PLAIN)
    options: dict[str, list[_alloc.Option]] = {}
    samples: dict[str, np.ndarray] = {}
    sens: dict[str, float] = {}
    rms2_of: dict[str, float] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # Each tensor is measured on a row sample, so the work is the sample size, not the tensor size.
        bar = tqdm(total=sum(min(e.numel, max(ALLOC_SAMPLE, 16 * matrix_shape(e.shape)[1])) for e in free),
                   desc="allocation: measuring candidates", unit="value", unit_scale=True)
    for e in free:
        w = source.get(e.name).astype(np.float32)
        rms2_of[e.name] = float(np.mean(np.square(w, dtype=np.float64)))
        rms = float(np.sqrt(rms2_of[e.name]))
        if mode == "fisher":
            s = _fisher(stats, e.name)
            if s is None:
                log.warning("no Fisher statistic for %s; using the smallest measured one", e.name)
            elif s == 0:
                log.info("%s has zero Fisher information (unused by the calibration objective): "
                         "it gets the cheapest candidate", e.name)
        else:
            s = 1.0 / (e.numel * rms * rms) if rms > 0 else 0.0
        sens[e.name] = s if s is not None else float("nan")
        samples[e.name] = _sample_rows(w, e.name)
        options[e.name] = [_measure(samples[e.name], c, e, seed) for c in cands]
        options[e.name].append(_alloc.Option("float16", float(16 * e.numel), 0.0))
        if bar is not None:
            bar.update(min(e.numel, max(ALLOC_SAMPLE, 16 * matrix_shape(e.shape)[1])))
    if bar is not None:
        bar.close()
    finite = [v for v in sens.values() if v == v and v > 0]
    floor = min(finite) if finite else 1.0
    for name, opts in options.items():
        s = sens[name] if sens[name] == sens[name] else floor
        sens[name] = s
        e = source.entry(name)
        for o in opts:
            o.distortion = s * e.numel * rms2_of[name] * o.distortion
    budget = target_bits * total_params - fixed_bits - pinned_bits
    # Below-2-bit candidates only as far as the budget needs them, coarsest last.
    for spec in LOW_RATE_CANDIDATES if tuple(candidates) == DEFAULT_CANDIDATES else ():
        if sum(min(o.bits for o in opts) for opts in options.values()) <= budget:
            break
        log.warning("target %.3f bits/param is below the cheapest candidates; adding %s", target_bits, spec)
        low = parse_format(spec)
        for name in options:
            e = source.entry(name)
            o = _measure(samples[name], low, e, seed)
            o.distortion *= sens[name] * e.numel * rms2_of[name]
            options[name].append(o)
        cands.append(low)
    choices = _alloc.allocate(options, budget, sens)
    for name, ch in choices.items():
        plan[name] = ch.format
    return {
        "mode": mode,
        "target_bits": target_bits,
        "candidates": [c.spec for c in cands] + ["float16"],
        "budget_bits": budget,
        "choices": {n: {"format": c.format, "bits": c.bits, "bits_per_param": c.bits / source.entry(n).numel,
                        "sensitivity": c.sensitivity, "predicted_distortion": c.distortion}
                    for n, c in choices.items()},
    }
