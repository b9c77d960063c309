"""``compress``: a safetensors model → a compressed model directory (resumable, crash-safe).

Steps: read the source's headers; collect calibration statistics (optional); plan a format per
tensor (:mod:`.planning`); copy the model's configuration and tokenizer files (:mod:`.manifest`);
encode the tensors one at a time (:mod:`.codec`), appending each record to a shard and the
journal (:mod:`.shards`); write the manifest last, atomically.  A run interrupted anywhere is
resumed by running it again: committed tensors are verified and skipped.

The progress bar counts estimated seconds of work, not tensors: a format's cost per value is
measured once per (format, row width) on a small Gaussian probe (after a warm-up call, so kernel
compilation is not counted), and a tensor's work is its size times that cost plus a fixed
per-tensor cost.  Formats differ by orders of magnitude (a trellis tensor can take 1000× the time
of a float16 one of the same size), so a bar by tensor count would promise the wrong ETA.  The bar
moves while a tensor's columns are encoded (:func:`~.codec.encode_tensor`'s ``progress``), so the
first large tensor (often the embedding table, half of a small model) does not leave it blank.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import Conflict, CorruptData, InvalidSpec
from .calibration import CalibrationStats
from .codec import decode_tensor, encode_tensor, matrix_shape
from .finetune import FinetuneOptions
from .formats import parse_format
from .info import ModelInfo, info
from .manifest import FILES_DIR, MANIFEST, MANIFEST_VERSION, copy_model_files, read_manifest, write_manifest
from .planning import DEFAULT_CANDIDATES, PLAIN, SMALL_TENSOR, lookup_stat, plan_formats
from .safetensors_io import SafetensorsSource, TensorEntry
from .shards import JOURNAL, SHARD_DIR, Journal, RecordRef, ShardWriter, encode_record, valid_prefix
from .stats import sqnr_db, tensor_stats

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 256 << 20
#: Values in the probe that measures a format's encoding cost for the progress bar.
_PROBE_VALUES = 1 << 14
#: Seconds charged per tensor besides encoding (reading, statistics, checksum, fsync of the record).
_TENSOR_OVERHEAD = 0.004


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
    copy_files: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    finetune: bool | Mapping[str, Any] | FinetuneOptions = False,
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
        Texts run through the model (the sentence-transformers or transformers causal-LM folder
        holding ``src``, :func:`vqsearch.weights.causal_lm.collect_any`) to collect input
        covariances (for LDLQ on every linear layer) and Fisher statistics; or statistics already
        collected with :func:`vqsearch.weights.calibration.collect`.  None = data-free (every
        tensor is rounded to nearest; the manifest says so per tensor).
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
        ``probes``, ``batch_size``, ``fisher``).
    copy_files : bool, default True
        Copy the source folder's configuration and tokenizer files into ``dst/files/`` (listed
        in the manifest), so the compressed folder alone gives a ready model
        (:func:`vqsearch.weights.load_sentence_transformer`).
    overwrite : bool, default False
        Replace a different job found in ``dst`` instead of raising ``Conflict``.
    progress : bool, default True
        tqdm progress bars (compression: weighted by each tensor's estimated work, see the module docstring).
    finetune : bool, mapping or FinetuneOptions, default False
        Fine-tune after rounding (:mod:`.finetune`, needs calibration texts and the models
        extra): scales, float16 leftovers and codes are tuned so that the compressed model's
        outputs match the float model's; formats and bits are unchanged.  A mapping sets options.
    """
    if finetune is not False and finetune is not None:
        from .finetune import compress_finetuned

        kwargs = dict(format=format, target_bits=target_bits, allocate=allocate, calibration=calibration,
                      candidates=candidates, small_tensor=small_tensor, shard_size=shard_size, damp=damp, seed=seed,
                      calibration_options=calibration_options, copy_files=copy_files)
        return compress_finetuned(src, dst, calibration, FinetuneOptions.of(finetune), kwargs, overwrite=overwrite,
                                  progress=progress)
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
        from .causal_lm import collect_any

        stats = collect_any(source.folder, list(calibration), progress=progress, **dict(calibration_options or {}))
    plan, alloc_report = plan_formats(source, fmt_map, target_bits, allocate, candidates, stats, small_tensor,
                                      seed, progress)
    root = Path(dst)
    job = {
        "source_files": source.file_digests(),
        "plan": plan,
        "damp": float(damp),
        "seed": int(seed),
        "calibration": stats.fingerprint if stats is not None else None,
        "shard_size": int(shard_size),
        "copy_files": bool(copy_files),
    }
    job = json.loads(json.dumps(job))  # tuples → lists, so it compares equal to the stored copy
    done = _prepare_dir(root, job, overwrite)
    if done is not None:
        return done
    files = copy_model_files(source.folder, root) if copy_files else []
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
        "source": {"files": job["source_files"], "metadata": source.metadata},
        "config": job,
        "shards": shards,
        "files": files,
        "tensors": tensors,
        "allocation": alloc_report,
        "totals": {"params": total_params, "bits": total_bits, "bits_per_param": total_bits / total_params,
                   "bytes_on_disk": sum(s["bytes"] for s in shards)},
        "seconds": time.perf_counter() - t_start,
        "history": [{"action": "compress", "time": time.time(), "tensors": len(tensors), "note": ""}],
    }
    if alloc_report is not None:
        alloc_report["achieved_bits_per_param"] = total_bits / total_params
    write_manifest(root, manifest)
    journal.remove()
    return info(root)


def _compress_tensors(source: SafetensorsSource, todo: list[TensorEntry], plan: dict[str, str],
                      stats: CalibrationStats | None, writer: ShardWriter, journal: Journal, damp: float,
                      seed: int, progress: bool) -> None:
    """Encode, write and journal each tensor of ``todo`` (one at a time in memory)."""
    hessians = {e.name: _hessian(stats, e.name, plan[e.name]) for e in todo}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        costs = WorkEstimate(seed)
        work = {e.name: costs.seconds(e, plan[e.name], hessians[e.name] is not None) for e in todo}
        bar = tqdm(total=sum(work.values()), desc="compressing", unit="s",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    try:
        for i, e in enumerate(todo):
            report = None
            if bar is not None:
                bar.set_postfix_str(f"tensor {i + 1}/{len(todo)}", refresh=False)
                report = _Advance(bar, work[e.name] - _TENSOR_OVERHEAD)
            _compress_one(source, e, plan[e.name], hessians[e.name], stats, writer, journal, damp, seed, report)
            if report is not None:
                report.finish(work[e.name])
    finally:
        if bar is not None:
            bar.close()


class _Advance:
    """Moves the bar by a tensor's encoding work as its columns are encoded, then by the rest."""

    def __init__(self, bar: Any, encode_work: float) -> None:
        self.bar, self.encode_work, self.done = bar, encode_work, 0.0

    def __call__(self, fraction: float) -> None:
        step = self.encode_work * fraction - self.done
        if step > 0:
            self._update(step)
            self.done += step

    def finish(self, work: float) -> None:
        self._update(max(work - self.done, 0.0))

    def _update(self, step: float) -> None:
        # The per-tensor steps add up to the total in another order than the total was summed in, so the
        # last one can overshoot it by a rounding error (tqdm then warns, and tests turn warnings into errors).
        self.bar.update(min(step, max(self.bar.total - self.bar.n, 0.0)))


def _hessian(stats: CalibrationStats | None, name: str, spec: str) -> np.ndarray | None:
    """The input covariance LDLQ uses for ``name`` (None: nearest rounding)."""
    if stats is None or spec in PLAIN or not parse_format(spec).ldlq:
        return None
    return lookup_stat(stats.hessians, name)


def _compress_one(source: SafetensorsSource, e: TensorEntry, spec: str, h: np.ndarray | None,
                  stats: CalibrationStats | None, writer: ShardWriter, journal: Journal, damp: float,
                  seed: int, progress: Any = None) -> None:
    t0 = time.perf_counter()
    w = source.get(e.name)
    enc = encode_tensor(w, spec, name=e.name, hessian=h, damp=damp, seed=seed, source_dtype=e.dtype,
                        progress=progress)
    tinfo: dict[str, Any] = {"bits": enc.bits, "bits_per_param": enc.bits_per_param,
                             "rounding": enc.meta.get("rounding")}
    if e.is_float:
        w_hat = decode_tensor(enc.arrays, enc.meta)
        tinfo["sqnr_db"] = _json_float(sqnr_db(w, w_hat))
        h_full = lookup_stat(stats.hessians, e.name) if stats is not None else None
        hdiag = np.diag(h_full) if h_full is not None else None
        tinfo["stats"] = {k: _json_float(v) for k, v in tensor_stats(w, hdiag).to_dict().items()}
    ref = writer.write(e.name, encode_record(e.name, enc.arrays, enc.meta))
    tinfo["seconds"] = time.perf_counter() - t0
    journal.append({"name": e.name, "shard": ref.shard, "offset": ref.offset, "length": ref.length,
                    "sha256": ref.sha256, "meta": enc.meta, "info": tinfo})


class WorkEstimate:
    """Estimated seconds to compress a tensor, for the progress bar (module docstring).

    Cost per value is measured per (format, row width, LDLQ or not) on a Gaussian probe of
    about ``_PROBE_VALUES`` values with the tensor's row width; LDLQ's cost per value grows with
    the row width, which is why the width is part of the key.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._per_value: dict[tuple[str, int, bool], float] = {}

    def seconds(self, e: TensorEntry, spec: str, ldlq: bool) -> float:
        if spec in PLAIN or not e.is_float:
            return _TENSOR_OVERHEAD
        n = matrix_shape(e.shape)[1]
        key = (spec, n, ldlq)
        if key not in self._per_value:
            self._per_value[key] = self._probe(spec, n, ldlq)
        return _TENSOR_OVERHEAD + e.numel * self._per_value[key]

    def _probe(self, spec: str, n: int, ldlq: bool) -> float:
        r, _ = parse_format(spec).tile_shape()
        rows = r * max(1, -(-_PROBE_VALUES // (n * r)))
        w = np.random.default_rng(self.seed).standard_normal((rows, n)).astype(np.float32)
        h = np.eye(n) if ldlq else None
        best = float("inf")
        for _ in range(2):  # the first call also compiles kernels; keep the faster (second) one
            t0 = time.perf_counter()
            enc = encode_tensor(w, spec, name="probe", hessian=h, seed=self.seed)
            decode_tensor(enc.arrays, enc.meta)
            best = min(best, time.perf_counter() - t0)
        return best / w.size


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
    elif any(p.name not in (SHARD_DIR, FILES_DIR, MANIFEST + ".tmp") for p in root.iterdir()):
        # never delete files we did not write, even with overwrite=True
        raise Conflict(f"{root} is not empty and is not a compressed model directory")
    return None


def _wipe(root: Path) -> None:
    """Remove what compress writes (manifest, journal, shards, copied files) and nothing else."""
    for p in (root / MANIFEST, root / JOURNAL, root / (MANIFEST + ".tmp"), root / (JOURNAL[:-6] + ".tmp")):
        p.unlink(missing_ok=True)
    shutil.rmtree(root / SHARD_DIR, ignore_errors=True)
    shutil.rmtree(root / FILES_DIR, ignore_errors=True)


def _drop_shards_after(root: Path, kept: list[dict]) -> None:
    """Delete shard files beyond the last kept record's shard (they hold only uncommitted data)."""
    last = int(Path(kept[-1]["shard"]).stem) if kept else -1
    for p in (root / SHARD_DIR).glob("*.arrows") if (root / SHARD_DIR).exists() else []:
        if p.stem.isdigit() and int(p.stem) > last:
            p.unlink()
