"""What a compressed model holds, per tensor and in total: :func:`info`, :class:`ModelInfo`, :class:`TensorInfo`."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import read_manifest

#: Formats stored without loss of the source values (no SQNR to report).
EXACT_FORMATS = ("raw", "float32")
#: Formats stored element by element, with no rounding method to report.
PLAIN_FORMATS = ("raw", "float16", "float32")


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
    #: "ldlq" (Hessian-aware), "nearest", or None for formats that do not round (float16, raw).
    rounding: str | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class ModelInfo:
    """What :func:`info` (and :func:`~vqsearch.weights.compress`) report for a compressed model."""

    path: Path | str  # a directory, or the URL of a served model
    tensors: list[TensorInfo]
    total_params: int
    total_bits: int
    bytes_on_disk: int
    allocation: dict[str, Any] | None
    config: dict[str, Any]
    seconds: float | None = None
    #: Copied model files (configuration, tokenizer): ``path``, ``bytes``, ``sha256``.
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bits_per_param(self) -> float:
        """Average stored bits per parameter, every stored array counted."""
        return self.total_bits / max(self.total_params, 1)

    @property
    def calibrated(self) -> bool:
        """Whether calibration statistics were used (the job's calibration fingerprint)."""
        return bool(self.config.get("calibration"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["bits_per_param"] = self.bits_per_param
        return out

    def table(self) -> str:
        """Human-readable per-tensor table plus totals."""
        rows = ["name | shape | format | rounding | bits/param | SQNR dB | RMS | max/RMS | kurtosis | act. kurtosis"]
        for t in self.tensors:
            s = t.stats or {}
            rows.append(" | ".join([
                t.name, "x".join(map(str, t.shape)) or "scalar", t.format, t.rounding or "-",
                f"{t.bits_per_param:.3f}", _sqnr_text(t), _g(s.get("rms")), _g(s.get("max_over_rms")),
                _g(s.get("kurtosis")), _g(s.get("activation_kurtosis")),
            ]))
        calib = "with calibration" if self.calibrated else "data-free (no calibration)"
        rows.append(f"total: {self.total_params:,} parameters, {self.bits_per_param:.4f} bits/parameter "
                    f"(all stored arrays counted), {self.bytes_on_disk:,} bytes on disk, {calib}")
        return "\n".join(rows)


def _sqnr_text(t: TensorInfo) -> str:
    if t.sqnr_db == float("inf") or (t.sqnr_db is None and t.format in EXACT_FORMATS):
        return "exact"
    return "-" if t.sqnr_db is None else f"{t.sqnr_db:.2f}"


def _g(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"


def _float(v: Any) -> float | None:
    """Manifest floats: JSON has no inf/nan, so they are stored as the strings "inf" / "-inf"."""
    return float(v) if isinstance(v, str) else v


def info(path: str | os.PathLike, *, api_key: str | None = None,
         cache_dir: str | os.PathLike | None = None) -> ModelInfo:
    """Per-tensor format, rounding, bits, shape, SQNR and statistics of a compressed model (from its manifest).

    ``path`` is a model directory or a served model's URL (``api_key`` and ``cache_dir`` as for
    :func:`vqsearch.weights.load`).
    """
    text = os.fspath(path)
    if isinstance(text, str) and text.lower().startswith(("http://", "https://")):
        from .archive import load

        archive = load(text, api_key=api_key, cache_dir=cache_dir)
        return model_info(archive.manifest, archive.label)
    root = Path(path)
    return model_info(read_manifest(root), root)


def model_info(m: dict[str, Any], path: Path | str) -> ModelInfo:
    """:class:`ModelInfo` of a parsed manifest."""
    tensors = []
    for t in m["tensors"]:
        rounding = t.get("rounding", t.get("params", {}).get("rounding"))
        if rounding is None and "ldlq" in t:  # version-1 manifests stored a boolean
            rounding = "ldlq" if t["ldlq"] else "nearest"
        if t["format"] in PLAIN_FORMATS:
            rounding = None
        tensors.append(TensorInfo(
            name=t["name"], shape=list(t["shape"]), dtype=t["dtype"], format=t["format"], bits=int(t["bits"]),
            bits_per_param=float(t["bits_per_param"]), sqnr_db=_float(t.get("sqnr_db")), stats=t.get("stats"),
            shard=t["shard"], offset=int(t["offset"]), length=int(t["length"]), sha256=t["sha256"],
            params=t.get("params", {}), seconds=float(t.get("seconds", 0.0)), rounding=rounding))
    tot = m["totals"]
    return ModelInfo(path=path, tensors=tensors, total_params=int(tot["params"]), total_bits=int(tot["bits"]),
                     bytes_on_disk=int(tot["bytes_on_disk"]), allocation=m.get("allocation"),
                     config=m.get("config", {}), seconds=m.get("seconds"), files=list(m.get("files") or []))
