"""The fitted codecs of an index: training, loading, encoding rows, and the reconstruction they store.

An index holds up to three fitted parts, each serialised into a store blob: the scan quantiser (compact
codes every search reads), an optional rescore quantiser (finer codes of the candidates; in residual
mode they encode ``x − decode(scan code)``) and, with IVF, the coarse quantiser.  :class:`Codecs` holds
them once trained; :func:`fit_codecs` trains them on a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .. import quantizers
from ..errors import EmptyInput
from ..quantizers import Quantizer
from .config import IndexConfig
from .ivf import CoarseQuantizer
from .metric import Metric, get_metric
from .scanners import Scanner, scanner_for

#: Rows are encoded and written in chunks of this many vectors.
WRITE_CHUNK = 65_536
#: At most this many vectors train the quantisers.
TRAIN_MAX = 100_000
#: Smallest encoding chunk while a progress bar is shown.
PROGRESS_CHUNK_MIN = 2048

CodeColumn = Literal["scan", "rescore"]


@dataclass(frozen=True)
class Codecs:
    """The fitted quantisers of an index (see the module docstring)."""

    scan: Quantizer
    rescore: Quantizer | None
    ivf: CoarseQuantizer | None
    scanner: Scanner
    residual: bool

    @classmethod
    def from_blobs(cls, blobs: dict[str, bytes], config: IndexConfig) -> Codecs:
        """Restore the states written by :func:`fit_codecs` (store blobs ``scan``, ``rescore``, ``ivf``)."""
        scan = quantizers.from_bytes(blobs["scan"])
        rescore = quantizers.from_bytes(blobs["rescore"]) if "rescore" in blobs else None
        ivf = CoarseQuantizer.from_bytes(blobs["ivf"], config.metric, config.ivf) if config.ivf is not None else None
        return cls(scan=scan, rescore=rescore, ivf=ivf, scanner=scanner_for(scan), residual=config.residual)

    def reconstruction_parts(self) -> list[tuple[Quantizer, CodeColumn]]:
        """(quantiser, code column) pairs whose decodes sum to the finest stored reconstruction."""
        if self.rescore is None:
            return [(self.scan, "scan")]
        if self.residual:
            return [(self.rescore, "rescore"), (self.scan, "scan")]
        return [(self.rescore, "rescore")]

    def bytes_per_vector(self, metric: Metric) -> int:
        """Bytes per vector that searches read: scan codes, rescore codes, and the exact norm if the metric
        stores one.  IVF list ids are not counted: a segment's rows are sorted by list, so searches use the
        nlist + 1 list offsets (found by binary search once per segment), not the per-row ids."""
        return self.scan.code_size + (self.rescore.code_size if self.rescore else 0) + 4 * metric.uses_norms

    def encode_rows(self, x: np.ndarray, metric: Metric,
                    bar: Any = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Code columns and extra per-row columns (IVF list, stored norm) of prepared vectors ``x``.

        ``bar`` (a tqdm bar over the rows, or ``None``) advances as chunks are encoded."""
        extra: dict[str, np.ndarray] = {}
        if self.ivf is not None:  # the store keeps each segment's rows grouped by list
            extra["list"] = self.ivf.assign(x)
        if metric.uses_norms:
            extra["norm2"] = metric.row_norms(x)
        share = 1.0 if self.rescore is None else 0.5  # of the bar's rows, per code column
        columns = {"scan": encode_chunked(self.scan, x, bar, share)}
        if self.rescore is not None:
            if self.residual:
                x = x - self.scan.decode(columns["scan"])
            columns["rescore"] = encode_chunked(self.rescore, x, bar, share)
        return columns, extra


def encode_chunked(q: Quantizer, x: np.ndarray, bar: Any = None, share: float = 1.0) -> np.ndarray:
    """``q.encode(x)`` in chunks (bounded temporaries), advancing ``bar`` by ``share`` × rows per chunk.

    With a bar the chunks are smaller (about 1/64 of the rows, at least ``PROGRESS_CHUNK_MIN``), so that
    it moves even for a batch of a few thousand rows."""
    n = x.shape[0]
    out = np.empty((n, q.code_size), dtype=np.uint8)
    step = WRITE_CHUNK if bar is None else min(WRITE_CHUNK, max(PROGRESS_CHUNK_MIN, -(-n // 64)))
    for start in range(0, n, step):
        out[start:start + step] = q.encode(x[start:start + step])
        if bar is not None:
            bar.update(min(step, n - start) * share)
    return out


def rescore_quantizer(config: IndexConfig) -> Quantizer:
    """The unfitted rescore quantiser.

    In residual mode its RHT gets a seed other than the scan's unless the spec names one.  In the scan's
    rotated basis each residual coordinate of sign codes is sign(o_i)·(|o_i| − mean|o|), a folded,
    non-Gaussian shape that the same rotation would leave in place; a fresh rotation makes the
    coordinates Gaussian-like again, which is what the rescore codes are tuned for (benchmarks/RESULTS.md,
    section 6).
    """
    _, params = quantizers.parse_spec(config.rescore)
    if config.residual and "seed" not in params:
        scan_seed = quantizers.parse_spec(config.scan)[1].get("seed", 0)
        return quantizers.get(config.rescore, seed=int(scan_seed) + 1)
    return quantizers.get(config.rescore)


def fit_codecs(x: np.ndarray, config: IndexConfig) -> tuple[dict[str, bytes], IndexConfig]:
    """Fitted states (store blobs) for prepared training vectors ``x``, and the config with automatic
    settings (the IVF list count) resolved for them."""
    n_train = x.shape[0]
    blobs = {}
    if config.ivf is not None:  # k-means samples up to ivf.train_size itself (faiss wants ~39 points per list)
        config = replace(config, ivf=config.ivf.resolved(n_train))
        blobs["ivf"] = CoarseQuantizer.train(x, config.metric, config.ivf).to_bytes()
    if x.shape[0] > TRAIN_MAX:
        x = x[np.sort(np.random.default_rng(0).choice(x.shape[0], TRAIN_MAX, replace=False))]
    scan_q = quantizers.get(config.scan)
    rescore_q = rescore_quantizer(config) if config.rescore else None
    for q in (scan_q, rescore_q):
        if q is not None and x.shape[0] < q.min_train:
            raise EmptyInput(f"{q.spec} needs at least {q.min_train} training vectors, got {x.shape[0]}; "
                             f"add a larger first batch or call Index.train(sample)")
    blobs["scan"] = scan_q.fit(x).to_bytes()
    if rescore_q is not None:
        target = x - scan_q.decode(scan_q.encode(x)) if config.residual else x
        blobs["rescore"] = rescore_q.fit(target).to_bytes()
    return blobs, config


def store_layout(cfg: IndexConfig) -> Any:
    """The :class:`~vqsearch.storage.StoreConfig` of a new index: one code column per quantiser (its width and
    codec named), the IVF list column and squared norms where the metric needs them.  Raises on a bad spec."""
    from ..storage import StoreConfig

    scan_q = quantizers.get(cfg.scan)
    rescore_q = quantizers.get(cfg.rescore) if cfg.rescore else None
    columns = {"scan": scan_q.code_size_for(cfg.dim)}
    codecs = {"scan": f"{scan_q.spec} codec {scan_q.codec_id} v{scan_q.format_version}"}
    if rescore_q is not None:
        columns["rescore"] = rescore_q.code_size_for(cfg.dim)
        codecs["rescore"] = f"{rescore_q.spec} codec {rescore_q.codec_id} v{rescore_q.format_version}"
    extra = {}
    if cfg.ivf is not None:
        extra["list"] = "int32"
    if get_metric(cfg.metric).uses_norms:
        extra["norm2"] = "float32"
    return StoreConfig(code_columns=columns, dim=cfg.dim, vector_dtype=None, config=cfg.to_json(),
                       extra_columns=extra, codecs=codecs, cluster_by="list" if cfg.ivf is not None else None)
