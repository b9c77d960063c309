"""``compress`` / ``load`` / ``decompress`` / ``info``: the public weights API.

>>> from vqsearch import weights                                               # doctest: +SKIP
>>> weights.compress("model.safetensors", "out", format="e8p:bits=2")          # doctest: +SKIP
>>> weights.compress("model.safetensors", "out3", target_bits=3.0,             # doctest: +SKIP
...                  calibration=texts)            # LDLQ + Fisher allocation
>>> w = weights.load("out"); w["encoder.layer.0.attention.self.query.weight"]  # doctest: +SKIP
>>> weights.decompress("out", "restored.safetensors", dtype="float16")         # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import Conflict, CorruptData, InvalidInput, InvalidSpec, NotFound
from . import allocate as _alloc
from .calibration import CalibrationStats
from .formats import decode_tensor as _decode
from .formats import encode_tensor, estimate_bits, matrix_shape, parse_format
from .reader import SafetensorsSource, TensorEntry
from .shards import (
    EOS,
    JOURNAL,
    MANIFEST,
    MANIFEST_VERSION,
    SHARD_DIR,
    Journal,
    RecordRef,
    ShardReader,
    ShardWriter,
    encode_record,
    read_manifest,
    valid_prefix,
    write_manifest,
)
from .shards import SCHEMA as RECORD_SCHEMA
from .stats import sqnr_db, tensor_stats

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "e8p:bits=2"
#: Tensors with fewer elements (and every 0-D/1-D tensor) are kept in float16 unless allocated.
SMALL_TENSOR = 4096
DEFAULT_SHARD_SIZE = 256 << 20
#: Candidate formats of the allocator: 2 … 8 bits, all with RHT and one scale per row.  Trellis
#: (L = 12) at the integer rates (it has lower error than E8 at equal rate), E8 balls in between,
#: RHT'd uniform integers above 4 bits.  Nothing below 2 bits: like Orr et al. (quantizers.md §7.3)
#: we clip at 2 bits — the second-order (Fisher) model underestimates the damage of very coarse
#: codes (MiniLM's word embeddings at 1.5 bits cost 0.032 of mean cosine on their own, 4× what the
#: model predicts from their damage at 2 bits).
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "trellis:bits=2,L=12", "e8:bits=2.25", "e8:bits=2.5", "e8:bits=2.75", "trellis:bits=3,L=12",
    "e8:bits=3.25", "e8:bits=3.5", "e8:bits=3.75", "trellis:bits=4,L=12", "int:bits=5,rht=true,block=0",
    "int:bits=6,rht=true,block=0", "int:bits=8,rht=true,block=0",
)
#: Added to the default candidates only when a target is infeasible with them (e.g. 2.0 bits on
#: average: per-row scales and float16 leftovers already cost ~0.08 bits/parameter on MiniLM).
LOW_RATE_CANDIDATES: tuple[str, ...] = ("e8:bits=1.75", "e8:bits=1.5", "e8:bits=1.25")
#: Values per tensor used to measure each candidate's error for the allocator.
ALLOC_SAMPLE = 1 << 15


# ----------------------------------------------------------------------------- info objects
@dataclass
class TensorInfo:
    """One tensor of a compressed model (a manifest entry)."""

    name: str
    shape: list[int]
    dtype: str
    format: str
    bits: int
    bits_per_param: float
    sqnr_db: float | None
    stats: dict[str, Any] | None
    shard: str
    offset: int
    length: int
    sha256: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class ModelInfo:
    """What :func:`info` (and :func:`compress`) report for a compressed model."""

    path: Path
    tensors: list[TensorInfo]
    total_params: int
    total_bits: int
    bytes_on_disk: int
    allocation: dict[str, Any] | None
    config: dict[str, Any]
    seconds: float | None = None

    @property
    def bits_per_param(self) -> float:
        """Average stored bits per parameter, every array counted."""
        return self.total_bits / max(self.total_params, 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["bits_per_param"] = self.bits_per_param
        return out

    def table(self) -> str:
        """Human-readable per-tensor table plus totals."""
        rows = ["name | shape | format | bits/param | SQNR dB | RMS | max/RMS | kurtosis | act. kurtosis"]
        for t in self.tensors:
            s = t.stats or {}
            ak = s.get("activation_kurtosis")
            rows.append(" | ".join([
                t.name, "x".join(map(str, t.shape)) or "scalar", t.format, f"{t.bits_per_param:.3f}",
                "exact" if t.sqnr_db is None or t.sqnr_db == float("inf") else f"{t.sqnr_db:.2f}",
                _g(s.get("rms")), _g(s.get("max_over_rms")), _g(s.get("kurtosis")), _g(ak),
            ]))
        rows.append(f"total: {self.total_params:,} parameters, {self.bits_per_param:.4f} bits/parameter "
                    f"(all stored arrays counted), {self.bytes_on_disk:,} bytes on disk")
        return "\n".join(rows)


def _g(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"


# ----------------------------------------------------------------------------- planning
def _pattern_format(name: str, mapping: Mapping[str, str]) -> str | None:
    for pattern, spec in mapping.items():
        if pattern == name or fnmatch.fnmatchcase(name, pattern):
            return spec
    return None


_TAG_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 32, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
             "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8}


def _plain_bits(e: TensorEntry, spec: str) -> int:
    """Stored bits of an unquantised tensor (raw keeps the source width; bfloat16 is read as float32)."""
    if spec == "raw":
        return _TAG_BITS[e.dtype] * e.numel
    return (16 if spec == "float16" else 32) * e.numel


def _is_small(e: TensorEntry, small: int) -> bool:
    return len(e.shape) < 2 or e.numel < small


def _lookup(d: Mapping[str, Any], name: str) -> Any:
    """Calibration statistics are keyed by module parameter names; the file may add a prefix."""
    if name in d:
        return d[name]
    hits = [k for k in d if name.endswith("." + k)]
    return d[hits[0]] if len(hits) == 1 else None


def _fisher(stats: CalibrationStats, name: str) -> float | None:
    key = name if name in stats.fisher_sum else _lookup({k: k for k in stats.fisher_sum}, name)
    return None if key is None else stats.fisher_mean(key)


def _sample_rows(w: np.ndarray, name: str, rows_multiple: int = 16) -> np.ndarray:
    m, n = matrix_shape(w.shape)
    mat = w.reshape(m, n)
    want = max(rows_multiple, (ALLOC_SAMPLE // max(n, 1)) // rows_multiple * rows_multiple)
    if want >= m:
        return mat
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return mat[np.sort(rng.choice(m, want, replace=False))]


def _measure(sample: np.ndarray, fmt: Any, e: TensorEntry, seed: int) -> _alloc.Option:
    """Relative MSE of ``fmt`` on a row sample (nearest rounding) and its exact bits on the whole tensor."""
    enc = encode_tensor(sample, fmt, name=e.name, seed=seed)
    err = np.mean((sample.astype(np.float64) - _decode(enc.arrays, enc.meta)) ** 2)
    rel = float(err) / (float(np.mean(np.square(sample, dtype=np.float64))) or 1.0)
    state = int(enc.arrays["state"].nbytes) if "state" in enc.arrays else 0
    return _alloc.Option(fmt.spec, float(estimate_bits(fmt, e.shape, state_bytes=state)), rel)


def _plan(
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
    """Per-tensor format specs (canonical), plus the allocation report when allocating."""
    plan: dict[str, str] = {}
    free: list[TensorEntry] = []
    explicit = {k: v for k, v in fmt_map.items() if k != "*"}
    for e in source.entries():
        if not e.is_float:
            plan[e.name] = "raw"
        elif target_bits is not None and _pattern_format(e.name, explicit) is None and not _is_small(e, small):
            free.append(e)
        elif _is_small(e, small) and _pattern_format(e.name, explicit) is None:
            plan[e.name] = "float16"
        else:
            spec = _pattern_format(e.name, fmt_map) or DEFAULT_FORMAT
            plan[e.name] = parse_format(spec).spec
    if target_bits is None:
        return plan, None
    if not free:
        raise InvalidInput("target_bits was given but no tensor is left for the allocator")
    mode = mode or ("fisher" if stats is not None else "proxy")
    if mode not in ("fisher", "proxy"):
        raise InvalidSpec(f"allocate must be 'fisher', 'proxy' or None, got {mode!r}")
    if mode == "fisher" and stats is None:
        raise InvalidSpec("allocate='fisher' needs calibration texts (or use allocate='proxy')")
    cands = [parse_format(c) for c in candidates]
    total_params = sum(e.numel for e in source.entries())
    fixed_bits = sum(_plain_bits(e, plan[e.name]) for e in source.entries()
                     if plan.get(e.name) in ("raw", "float16", "float32"))
    options: dict[str, list[_alloc.Option]] = {}
    samples: dict[str, np.ndarray] = {}
    sens: dict[str, float] = {}
    rms2_of: dict[str, float] = {}
    pinned_bits = 0
    iterator = source.entries()
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="allocation: measuring candidates", unit="tensor")
    for e in iterator:
        if e.name in plan:
            if plan[e.name] not in ("raw", "float16", "float32"):
                pinned_bits += estimate_bits(plan[e.name], e.shape, state_bytes=256)
            continue
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
    report = {
        "mode": mode,
        "target_bits": target_bits,
        "candidates": [c.spec for c in cands] + ["float16"],
        "budget_bits": budget,
        "choices": {n: {"format": c.format, "bits": c.bits, "bits_per_param": c.bits / source.entry(n).numel,
                        "sensitivity": c.sensitivity, "predicted_distortion": c.distortion}
                    for n, c in choices.items()},
    }
    return plan, report


# ----------------------------------------------------------------------------- compress
def _compress_tensors(source: SafetensorsSource, todo: list[TensorEntry], plan: dict[str, str],
                      stats: CalibrationStats | None, writer: ShardWriter, journal: Journal, damp: float,
                      seed: int, progress: bool) -> None:
    """Encode, write and journal each tensor of ``todo`` (one at a time in memory)."""
    iterator: Any = todo
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc="compressing", unit="tensor")
    for e in iterator:
        t0 = time.perf_counter()
        w = source.get(e.name)
        spec = plan[e.name]
        h = None
        if stats is not None and spec not in ("raw", "float16", "float32") and parse_format(spec).ldlq:
            h = _lookup(stats.hessians, e.name)
        enc = encode_tensor(w, spec, name=e.name, hessian=h, damp=damp, seed=seed, source_dtype=e.dtype)
        tinfo: dict[str, Any] = {"bits": enc.bits, "bits_per_param": enc.bits_per_param}
        if e.is_float:
            w_hat = _decode(enc.arrays, enc.meta)
            tinfo["sqnr_db"] = _json_float(sqnr_db(w, w_hat))
            h_full = _lookup(stats.hessians, e.name) if stats is not None else None
            hdiag = np.diag(h_full) if h_full is not None else None
            tinfo["stats"] = {k: _json_float(v) for k, v in tensor_stats(w, hdiag).to_dict().items()}
            tinfo["ldlq"] = h is not None
        ref = writer.write(e.name, encode_record(e.name, enc.arrays, enc.meta))
        tinfo["seconds"] = time.perf_counter() - t0
        journal.append({"name": e.name, "shard": ref.shard, "offset": ref.offset, "length": ref.length,
                        "sha256": ref.sha256, "meta": enc.meta, "info": tinfo})


def compress(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    format: str | Mapping[str, str] | None = None,
    target_bits: float | None = None,
    allocate: str | None = None,
    calibration: Sequence[str] | CalibrationStats | None = None,
    *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    small_tensor: int = SMALL_TENSOR,
    shard_size: int = DEFAULT_SHARD_SIZE,
    damp: float = 0.01,
    seed: int = 0,
    calibration_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    finetune: Any = False,
) -> ModelInfo:
    """Compress a safetensors model into Arrow shards (resumable); returns the model's info.

    Parameters
    ----------
    src : path
        ``model.safetensors``, a sharded ``*.safetensors.index.json``, or their folder.
    dst : path
        Output directory (created).  If it holds an interrupted run of the same job, the tensors
        already committed are verified and skipped; a finished identical job is a no-op.
    format : str or mapping, default ``"e8p:bits=2"``
        Weight format of every 2-D tensor (:mod:`.formats`), or a mapping ``{glob: format}``
        (first match wins, ``"*"`` for the rest).  With ``target_bits``, tensors matched by an
        explicit (non-``"*"``) pattern are pinned and the others are allocated.
    target_bits : float, optional
        Average bits per parameter over the **whole file** (every stored array counted,
        float16 leftovers and integer buffers included); turns on bit allocation.
    allocate : {"fisher", "proxy"}, optional
        Allocation sensitivity (:mod:`.allocate`); default "fisher" with calibration, else "proxy".
    calibration : list of str or CalibrationStats, optional
        Texts run through the model (the sentence-transformers folder holding ``src``) to collect
        input covariances (for LDLQ on every linear layer) and Fisher statistics; or statistics
        already collected with :func:`vqsearch.weights.calibration.collect`.  None = data-free.
    candidates : sequence of str
        Formats the allocator chooses from (float16 is always an option).
    small_tensor : int, default 4096
        Tensors with fewer elements, and all 0-D/1-D tensors, are stored as float16.
    shard_size : int, default 256 MiB
        Upper bound of a shard file (a single larger tensor gets a shard of its own).
    damp : float, default 0.01
        LDLQ relative damping.
    seed : int, default 0
        Mixed into the per-tensor RHT seeds.
    calibration_options : mapping, optional
        Keyword arguments of :func:`vqsearch.weights.calibration.collect` (``max_seq_length``,
        ``probes``, ``batch_size``).
    overwrite : bool, default False
        Replace a different job found in ``dst`` instead of raising ``Conflict``.
    progress : bool, default True
        tqdm progress bars.
    finetune : bool, mapping or FinetuneOptions, default False
        Fine-tune after rounding (:mod:`.finetune`, needs calibration texts and the models
        extra): scales, float16 leftovers and codes are tuned so that the compressed model's
        outputs match the float model's; formats and bits are unchanged.  A mapping sets options.
    """
    if finetune is not False and finetune is not None:
        from .finetune import FinetuneOptions, compress_finetuned

        options = FinetuneOptions.of(finetune)
        kwargs = dict(format=format, target_bits=target_bits, allocate=allocate, calibration=calibration,
                      candidates=candidates, small_tensor=small_tensor, shard_size=shard_size, damp=damp, seed=seed,
                      calibration_options=calibration_options)
        return compress_finetuned(src, dst, calibration, options, kwargs, overwrite=overwrite, progress=progress)
    t_start = time.perf_counter()
    if format is not None and not isinstance(format, (str, Mapping)):
        raise InvalidSpec(f"format must be a spec string or a mapping of glob -> spec, got {type(format).__name__}")
    fmt_map: dict[str, str] = {"*": format} if isinstance(format, str) else dict(format or {})
    for spec in fmt_map.values():
        parse_format(spec)  # validate early
    if target_bits is not None:
        target_bits = float(target_bits)
        if not 0.5 <= target_bits <= 32:
            raise InvalidSpec(f"target_bits must be in [0.5, 32], got {target_bits}")
        if "*" in fmt_map and isinstance(format, str):
            raise InvalidSpec("give either format (one format for every tensor) or target_bits (allocation), "
                              "not both; pin single tensors with a mapping")
    elif allocate is not None:
        raise InvalidSpec("allocate needs target_bits")
    if shard_size < 4096:
        raise InvalidSpec(f"shard_size must be at least 4096 bytes, got {shard_size}")
    source = SafetensorsSource(src)
    stats: CalibrationStats | None
    if calibration is None:
        stats = None
    elif isinstance(calibration, CalibrationStats):
        stats = calibration
    else:
        from .causal_lm import collect_any as collect

        stats = collect(source.folder, list(calibration), progress=progress, **dict(calibration_options or {}))
    plan, alloc_report = _plan(source, fmt_map, target_bits, allocate, candidates, stats, small_tensor,
                               seed, progress)
    root = Path(dst)
    job = {
        "source": str(source.path.resolve()),
        "source_files": sorted({(str(e.file.name), e.file.stat().st_size) for e in source.entries()}),
        "plan": plan,
        "damp": float(damp),
        "seed": int(seed),
        "calibration": stats.fingerprint if stats is not None else None,
        "shard_size": int(shard_size),
    }
    job = json.loads(json.dumps(job))  # tuples → lists, so it compares equal to the stored copy
    done = _prepare_dir(root, job, overwrite)
    if done is not None:
        return done
    journal = Journal(root)
    _, entries = journal.read()
    kept = valid_prefix(root, entries)
    if len(kept) < len(entries):
        log.warning("resume: %d of %d journaled tensors failed verification and will be redone",
                    len(entries) - len(kept), len(entries))
    _drop_shards_after(root, kept)
    journal.start(job, kept)
    writer = ShardWriter(root, shard_size)
    writer.resume([RecordRef(e["name"], e["shard"], e["offset"], e["length"], e["sha256"]) for e in kept])
    done_names = {e["name"] for e in kept}
    todo = [e for e in source.entries() if e.name not in done_names]
    if done_names:
        log.info("resume: %d tensors already written, %d to go", len(done_names), len(todo))
    try:
        _compress_tensors(source, todo, plan, stats, writer, journal, damp, seed, progress)
    except BaseException:
        writer.abort()  # keep what is committed (journal + fsynced records) for the next run
        raise
    shards = writer.close()
    _, entries = journal.read()
    by_name = {x["name"]: x for x in entries}
    tensors = []
    for e in source.entries():
        x = by_name[e.name]
        tensors.append({"name": e.name, "shape": list(e.shape), "dtype": e.dtype, "format": x["meta"]["format"],
                        "params": {k: v for k, v in x["meta"].items() if k not in ("format", "shape", "dtype")},
                        "shard": x["shard"], "offset": x["offset"], "length": x["length"], "sha256": x["sha256"],
                        **x["info"]})
    total_params = sum(e.numel for e in source.entries())
    total_bits = sum(t["bits"] for t in tensors)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "created_by": f"vqsearch {__version__}",
        "source": {"path": job["source"], "metadata": source.metadata},
        "config": job,
        "shards": shards,
        "tensors": tensors,
        "allocation": alloc_report,
        "totals": {"params": total_params, "bits": total_bits, "bits_per_param": total_bits / total_params,
                   "bytes_on_disk": sum(s["bytes"] for s in shards)},
        "seconds": time.perf_counter() - t_start,
    }
    if alloc_report is not None:
        alloc_report["achieved_bits_per_param"] = total_bits / total_params
    write_manifest(root, manifest)
    journal.remove()
    return info(root)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None if v != v else ("inf" if v > 0 else "-inf")
    return v


def _prepare_dir(root: Path, job: dict, overwrite: bool) -> ModelInfo | None:
    """Create ``root``; return the existing info when the same job already finished there."""
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST).exists():
        try:
            old = read_manifest(root)
        except CorruptData:
            old = None
        if old is not None and old.get("config") == job and not overwrite:
            log.info("%s already holds this compressed model; nothing to do", root)
            return info(root)
        if not overwrite:
            raise Conflict(f"{root} holds a different compressed model; pass overwrite=True or another directory")
        _wipe(root)
    elif (root / JOURNAL).exists():
        old_job, _ = Journal(root).read()
        if old_job != job:
            if not overwrite:
                raise Conflict(f"{root} holds an interrupted run of a different job; pass overwrite=True "
                               "or another directory")
            _wipe(root)
    elif any(p.name not in (SHARD_DIR, MANIFEST + ".tmp") for p in root.iterdir()):
        # never delete files we did not write, even with overwrite=True
        raise Conflict(f"{root} is not empty and is not a compressed model directory")
    return None


def _wipe(root: Path) -> None:
    """Remove what compress writes (manifest, journal, shards) and nothing else."""
    for p in (root / MANIFEST, root / JOURNAL, root / (MANIFEST + ".tmp"), root / (JOURNAL[:-6] + ".tmp")):
        p.unlink(missing_ok=True)
    shutil.rmtree(root / SHARD_DIR, ignore_errors=True)


def _drop_shards_after(root: Path, kept: list[dict]) -> None:
    """Delete shard files beyond the last kept record's shard (they hold only uncommitted data)."""
    last = int(Path(kept[-1]["shard"]).stem) if kept else -1
    for p in (root / SHARD_DIR).glob("*.arrows") if (root / SHARD_DIR).exists() else []:
        if p.stem.isdigit() and int(p.stem) > last:
            p.unlink()


# ----------------------------------------------------------------------------- reading
class WeightsArchive(Mapping[str, np.ndarray]):
    """Lazy, memory-mapped mapping name → decoded ``np.ndarray`` of a compressed model.

    Tensors are decoded on access (float32; integer buffers in their own dtype).  Each record's
    SHA-256 is checked the first time it is read (``verify``); a mismatch or a truncated shard
    raises :class:`~vqsearch.errors.CorruptData` naming the shard file.  With ``cache=True``
    decoded arrays are kept (and returned read-only).  Safe to share between threads.
    """

    def __init__(self, root: str | os.PathLike, *, cache: bool = False, verify: bool = True) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self._entries = {t["name"]: t for t in self.manifest["tensors"]}
        self._cache_on = bool(cache)
        self._verify = bool(verify)
        self._cache: dict[str, np.ndarray] = {}
        self._readers: dict[str, ShardReader] = {}
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    # Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise KeyError(name)
        if self._cache_on and name in self._cache:
            return self._cache[name]
        meta, arrays = self.record(name)
        out = _decode(arrays, meta)
        if out.dtype.kind == "f":
            out = np.ascontiguousarray(out, dtype=np.float32)
        if self._cache_on:
            out.flags.writeable = False
            with self._lock:
                self._cache[name] = out
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # extras
    def entry(self, name: str) -> dict[str, Any]:
        """The manifest entry of ``name`` (raises ``NotFound``)."""
        if name not in self._entries:
            raise NotFound(f"tensor {name!r} is not in {self.root}")
        return self._entries[name]

    def shard(self, rel: str) -> ShardReader:
        with self._lock:
            if rel not in self._readers:
                if rel not in {s["file"] for s in self.manifest["shards"]}:
                    raise NotFound(f"shard {rel!r} is not part of {self.root}")
                self._readers[rel] = ShardReader(self.root / rel)
            return self._readers[rel]

    def raw_record(self, name: str) -> np.ndarray:
        """The tensor's Arrow record message bytes (a read-only memory-mapped uint8 view), verified."""
        e = self.entry(name)
        reader = self.shard(e["shard"])
        view = reader.raw(int(e["offset"]), int(e["length"]))
        if self._verify and name not in self._verified:
            from .shards import sha256

            if sha256(view) != e["sha256"]:
                raise CorruptData(f"{reader.path}: tensor {name!r} fails its SHA-256 checksum (corrupt shard)")
            with self._lock:
                self._verified.add(name)
        return view

    def record(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(record metadata, stored arrays) of ``name``: the codes, scales, ... as zero-copy views."""
        import pyarrow as pa

        from .shards import decode_record

        view = self.raw_record(name)
        return decode_record(pa.py_buffer(view), str(self.root / self.entry(name)["shard"]))

    def record_stream(self, name: str) -> Iterator[bytes]:
        """The tensor's record as a standalone Arrow IPC stream (schema, record, end marker)."""
        view = self.raw_record(name)
        yield RECORD_SCHEMA.serialize().to_pybytes()
        for i in range(0, view.size, 1 << 20):
            yield view[i:i + (1 << 20)].tobytes()
        yield EOS

    def close(self) -> None:
        with self._lock:
            self._readers.clear()
            self._cache.clear()

    def __enter__(self) -> WeightsArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(path: str | os.PathLike, *, cache: bool = False, verify: bool = True) -> WeightsArchive:
    """Open a compressed model: a lazy mapping name → decoded ``np.ndarray`` (see :class:`WeightsArchive`)."""
    return WeightsArchive(path, cache=cache, verify=verify)


def info(path: str | os.PathLike) -> ModelInfo:
    """Per-tensor format, bits, shape, SQNR and statistics of a compressed model (from its manifest)."""
    root = Path(path)
    m = read_manifest(root)
    tensors = []
    for t in m["tensors"]:
        sq = t.get("sqnr_db")
        sq = float(sq) if isinstance(sq, str) else sq
        tensors.append(TensorInfo(
            name=t["name"], shape=list(t["shape"]), dtype=t["dtype"], format=t["format"], bits=int(t["bits"]),
            bits_per_param=float(t["bits_per_param"]), sqnr_db=sq, stats=t.get("stats"), shard=t["shard"],
            offset=int(t["offset"]), length=int(t["length"]), sha256=t["sha256"], params=t.get("params", {}),
            seconds=float(t.get("seconds", 0.0))))
    tot = m["totals"]
    return ModelInfo(path=root, tensors=tensors, total_params=int(tot["params"]), total_bits=int(tot["bits"]),
                     bytes_on_disk=int(tot["bytes_on_disk"]), allocation=m.get("allocation"),
                     config=m.get("config", {}), seconds=m.get("seconds"))


_OUT_DTYPES = {"float16": ("F16", "<f2"), "float32": ("F32", "<f4"), "bfloat16": ("BF16", None)}


def decompress(path: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write the decoded model as one safetensors file (streamed: one tensor in memory at a time).

    ``dtype`` ("float32", "float16" or "bfloat16") applies to floating-point tensors; integer
    buffers keep their dtype.  The source file's ``__metadata__`` (e.g. ``{"format": "pt"}``) is kept.
    """
    if dtype not in _OUT_DTYPES:
        raise InvalidSpec(f"dtype must be one of {sorted(_OUT_DTYPES)}, got {dtype!r}")
    archive = load(path)
    header: dict[str, Any] = {}
    meta = archive.manifest.get("source", {}).get("metadata") or {}
    if meta:
        header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    offset = 0
    plan = []
    for t in archive.manifest["tensors"]:
        numel = int(np.prod(t["shape"], dtype=np.int64)) if t["shape"] else 1
        if t["format"] == "raw" and t["dtype"] not in ("F64", "F32", "F16", "BF16"):
            tag, size = t["dtype"], np.dtype(t["params"]["raw_dtype"]).itemsize
        else:
            tag, size = _OUT_DTYPES[dtype][0], 4 if dtype == "float32" else 2
        header[t["name"]] = {"dtype": tag, "shape": list(t["shape"]), "data_offsets": [offset, offset + numel * size]}
        plan.append((t["name"], tag))
        offset += numel * size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name, tag in plan:
            arr = archive[name]
            if tag == "BF16":
                # Round to nearest even on the upper 16 bits of the float32 pattern.
                u = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
                u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
                fh.write(u.tobytes())
            elif tag in ("F16", "F32"):
                fh.write(np.ascontiguousarray(arr, dtype=_OUT_DTYPES[dtype][1]).tobytes())
            else:
                fh.write(np.ascontiguousarray(arr).astype(np.dtype(arr.dtype).newbyteorder("<")).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    archive.close()
    return out
