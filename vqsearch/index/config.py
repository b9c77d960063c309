"""Index settings: the persistent :class:`IndexConfig`, the named presets and the defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .ivf import IVFConfig
from .metric import get_metric

FORMAT_VERSION = 1

#: Recall@10 that every preset aims at: its search settings (``oversample``, ``nprobe``) are chosen from the
#: recall curve the index measures on itself (:mod:`.tuning`), with a margin for unseen queries.
DEFAULT_TARGET_RECALL = 0.95
#: Search settings that ``target_recall`` chooses when they are not given explicitly.
TUNABLE = ("oversample", "nprobe")

#: Named settings for :meth:`vqsearch.Index.create`, chosen with ``benchmarks/search.py`` on the shared
#: Debian-MiniLM set (benchmarks/RESULTS.md, section 2).  Explicit arguments override a preset.
#: Bytes per vector below are for d = 384 (the scan codes, the rescoring codes).
PRESETS: dict[str, dict[str, Any]] = {
    # 56 + 192 bytes: sign bits (RaBitQ) scan, residual 4-bit trellis (QTIP) rescoring.
    "default": {"scan": "binary", "rescore": "trellis:bits=4,L=12,rht=true", "ivf": "auto", "oversample": 12,
                "residual": True, "target_recall": DEFAULT_TARGET_RECALL},
    # 56 + 84 bytes: residual 1.75-bit E8 lattice codes with a per-vector scale.
    "compact": {"scan": "binary", "rescore": "e8:bits=1.75,rht=true,scale=vector", "ivf": "auto",
                "oversample": 10, "residual": True, "target_recall": DEFAULT_TARGET_RECALL},
    # 56 + 768 bytes: float16 rescoring (the near-lossless reference).
    "accurate": {"scan": "binary", "rescore": "float16", "ivf": "auto", "oversample": 10, "residual": False,
                 "target_recall": DEFAULT_TARGET_RECALL},
}
DEFAULT_SCAN = PRESETS["default"]["scan"]
DEFAULT_RESCORE = PRESETS["default"]["rescore"]
DEFAULT_OVERSAMPLE = PRESETS["default"]["oversample"]

#: Marks an argument of :meth:`vqsearch.Index.create` the caller did not give (the preset decides).
UNSET: Any = object()


@dataclass(frozen=True)
class IndexConfig:
    """Persistent settings of an index (stored in every manifest).

    Parameters are those of :meth:`vqsearch.Index.create`; ``ivf`` is resolved (automatic list counts
    fixed) when the index is trained.
    """

    dim: int
    metric: str = "cosine"
    scan: str = DEFAULT_SCAN
    rescore: str | None = DEFAULT_RESCORE
    ivf: IVFConfig | None = None
    oversample: int = DEFAULT_OVERSAMPLE
    residual: bool = True
    target_recall: float | None = None  # recall@10 the default search settings aim at (None: as configured)
    tuned: tuple[str, ...] = ()  # settings in TUNABLE chosen from the recall curve, not given explicitly

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "dim": self.dim, "metric": self.metric, "scan": self.scan,
                "rescore": self.rescore, "oversample": self.oversample, "residual": self.residual,
                "target_recall": self.target_recall, "tuned": list(self.tuned),
                "ivf": None if self.ivf is None else dict(self.ivf.__dict__)}

    @classmethod
    def from_json(cls, cfg: dict[str, Any]) -> IndexConfig:
        if int(cfg.get("format", 0)) > FORMAT_VERSION:
            raise InvalidInput(f"index format {cfg.get('format')} is newer than this vqsearch supports")
        return cls(dim=int(cfg["dim"]), metric=cfg["metric"], scan=cfg["scan"], rescore=cfg["rescore"],
                   ivf=IVFConfig.from_any(cfg.get("ivf")), oversample=int(cfg.get("oversample", 10)),
                   residual=bool(cfg.get("residual", False)), target_recall=cfg.get("target_recall"),
                   tuned=tuple(cfg.get("tuned", ())))

    @classmethod
    def from_arguments(cls, *, dim: object, metric: str, preset: str, scan: Any = UNSET, rescore: Any = UNSET,
                       ivf: Any = UNSET, oversample: Any = UNSET, residual: Any = UNSET,
                       target_recall: Any = UNSET) -> IndexConfig:
        """The settings of :meth:`vqsearch.Index.create`: the preset's values for every ``UNSET`` argument,
        validated (quantiser specs are validated by the caller, which builds the quantisers)."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidInput(f"dim must be a positive integer, got {dim!r}")
        if preset not in PRESETS:
            raise InvalidInput(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        given = {"scan": scan, "rescore": rescore, "ivf": ivf, "oversample": oversample, "residual": residual,
                 "target_recall": target_recall}
        chosen = {name: (PRESETS[preset][name] if value is UNSET else value) for name, value in given.items()}
        cfg = cls(dim=int(dim), metric=get_metric(metric).name, scan=chosen["scan"], rescore=chosen["rescore"],
                  ivf=IVFConfig.from_any(chosen["ivf"]), oversample=int(chosen["oversample"]),
                  residual=bool(chosen["residual"]) and chosen["rescore"] is not None,
                  target_recall=check_target_recall(chosen["target_recall"]))
        if cfg.oversample < 1:
            raise InvalidInput(f"oversample must be >= 1, got {chosen['oversample']}")
        if cfg.target_recall is not None:
            tuned = () if oversample is not UNSET else ("oversample",)
            if cfg.ivf is not None and cfg.ivf.nprobe == 0:
                tuned += ("nprobe",)
            cfg = replace(cfg, tuned=tuned)
        return cfg


def check_target_recall(value: Any) -> float | None:
    """A recall target in (0, 1], or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < float(value) <= 1:
        raise InvalidInput(f"target_recall must be a number in (0, 1] or None, got {value!r}")
    return float(value)
