"""Weight formats: the spec grammar and the registry of formats a tensor can be stored in.

A format is a spec string ``name[:key=value,...]``, read with the same grammar as quantiser specs
(:func:`vqsearch.quantizers.split_spec` / :func:`~vqsearch.quantizers.coerce_params`).  The name is
looked up among the weight formats below first, then among the registered quantisers:

==================================  =========================================================
``float16`` / ``float32`` / ``raw``  stored as is (``raw`` keeps the source dtype; non-float
(``fp16``, ``half``, ``fp32``)       tensors such as ``position_ids`` are always ``raw``)
``int:bits=k``  (``int4``, ``int2``) round-to-nearest uniform k-bit integers (2^k levels,
                                     symmetric "midrise": (i − (2^k − 1)/2)·Δ) with one
                                     float16 step Δ per block of ``block`` weights (default
                                     128); Δ from the block's absmax (``scaling=absmax``) or
                                     the MSE-optimal clip on a grid (``scaling=mse``, default)
``ternary``  (``absmean``,           BitNet b1.58's absmean rule (quantizers.md §4.2):
``bitnet``)                          γ = mean|w| per block, t = clip(round(w/γ), −1, 1),
                                     packed 5 trits per byte (1.6 bits) + float16 γ
a quantiser that declares a weight   vector formats: ``e8p:bits=2``, ``e8:bits=2.5``,
tile (:meth:`Quantizer.weight_tile`) ``leech:bits=2``, ``trellis:bits=2``, ``sq4``, ``pq:m=2``
==================================  =========================================================

Weight-format names win over quantiser names and aliases: ``int4`` is the block-scaled integer
format above (not the ``sq4`` quantiser's alias), ``ternary`` is BitNet absmean (the embedding
quantiser of that name declares no weight tile), and ``ternary:mode=x`` is an error, not a
silent switch of meaning.  A quantiser without a weight tile raises :class:`InvalidSpec`.

Keys that belong to the weight format (everything else of a vector spec goes to the quantiser):

* ``rht`` — randomized Hadamard transform along the input dimension (default ``true`` for vector
  formats, ``false`` for ``int`` and ``ternary``).  Seeded per tensor; the seed is stored (64
  bits, counted).  The quantiser's own ``rht``/``seed`` are not used: the weights layer rotates.
* ``block`` — weights per scale along the input dimension (0 = one scale per row, the default
  for vector and ternary formats).  Vector formats use the block RMS, so the quantiser always
  sees unit-RMS data (what its codebook gain is tuned for).  Scales are float16 (float32 only if
  a scale overflows float16), counted.
* ``outliers`` — fraction of weights (largest |w|, e.g. 0.005) kept exactly as float16 values
  with 32-bit flat positions (48 bits each, counted), as in SpQR / Orr et al.'s sparse-outlier
  formats; the remaining weights are quantised with the dense format.
* ``ldlq`` — use Hessian-aware rounding when calibration statistics are given (default true).
  It is a request, not a property of the stored codes: the canonical spec shows it only when
  false, and each tensor's manifest entry says which rounding was applied (``rounding``).
* ``tile`` — columns per vector for quantisers that take any vector length (default 8).

Quantiser defaults for weights.  A quantiser's :attr:`~vqsearch.quantizers.Quantizer.weight_defaults`
override its class defaults when a weight spec leaves the key out: ``trellis:bits=4`` means
``L=12`` here (the embedding quantiser keeps ``L=16``, much slower on a whole model; RESULTS.md §4
measures both).  Canonical specs spell those keys out.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

from .. import quantizers
from ..errors import InvalidSpec, UnknownQuantizer

#: Weight-format keys of vector formats with their defaults (the rest of the spec is the quantiser's).
_VECTOR_KEYS: dict[str, Any] = {"rht": True, "block": 0, "outliers": 0.0, "ldlq": True, "tile": 8}
#: Keys of the registered element formats with their defaults; ``int``'s bits has no default (0).
_ELEMENT_KEYS: dict[str, dict[str, Any]] = {
    "raw": {}, "float16": {}, "float32": {},
    "int": {"bits": 0, "scaling": "mse", "rht": False, "block": 128, "outliers": 0.0, "ldlq": True},
    "ternary": {"rht": False, "block": 0, "outliers": 0.0, "ldlq": True},
}
_DESCRIPTIONS = {
    "raw": "stored as is, source dtype kept",
    "float16": "IEEE half precision",
    "float32": "IEEE single precision",
    "int": "uniform k-bit integers with a float16 step per block (round to nearest, or LDLQ)",
    "ternary": "BitNet b1.58 absmean ternary, 5 trits per byte + float16 gamma per block",
}
_ALIASES = {
    "fp16": "float16", "f16": "float16", "half": "float16", "fp32": "float32", "f32": "float32",
    "absmean": "ternary", "bitnet": "ternary",
}
#: Code bits per weight of the element formats, before scales and padding.
_ELEMENT_BITS = {"float16": 16.0, "float32": 32.0, "raw": 32.0, "ternary": 1.6}


@dataclass(frozen=True)
class WeightFormat:
    """A parsed weight format (see the module docstring); build with :func:`parse_format`."""

    kind: str  # "raw" | "float16" | "float32" | "int" | "ternary" | "vq"
    bits: int = 0  # int only
    quantizer: str = ""  # vq only: the canonical quantiser spec (without rht/seed)
    rht: bool = False
    block: int = 0
    outliers: float = 0.0
    ldlq: bool = True
    scaling: str = "mse"  # int only
    tile: int = 8  # vq formats whose quantiser takes any vector length: columns per tile

    @property
    def spec(self) -> str:
        """Canonical spec string; :func:`parse_format` of it gives this format back."""
        if self.kind in ("raw", "float16", "float32"):
            return self.kind
        keys: dict[str, Any] = {}
        if self.kind == "int":
            head = f"int:bits={self.bits}"
            keys["scaling"] = self.scaling
        elif self.kind == "ternary":
            head = "ternary"
        else:
            head = self.quantizer
        keys.update(rht=_text(self.rht), block=self.block, outliers=_text(self.outliers))
        if not self.ldlq:
            keys["ldlq"] = "false"
        if self.kind == "vq" and _quantizer_tile(self.quantizer) is None:
            keys["tile"] = self.tile
        sep = "," if ":" in head else ":"
        return head + sep + ",".join(f"{k}={v}" for k, v in keys.items())

    @property
    def is_quantised(self) -> bool:
        return self.kind in ("int", "ternary", "vq")

    @property
    def nominal_bits(self) -> float:
        """Code bits per weight before overheads (scales, padding, outliers)."""
        if self.kind == "int":
            return float(self.bits)
        if self.kind != "vq":
            return _ELEMENT_BITS[self.kind]
        r, c = self.tile_shape()
        return 8.0 * code_bytes(self.quantizer, r * c) / (r * c)

    def tile_shape(self) -> tuple[int, int]:
        """(rows r, columns c) of one quantiser vector (element formats: 1 × 8, the LDLQ block)."""
        if self.kind != "vq":
            return (1, 8)
        return _quantizer_tile(self.quantizer) or (1, self.tile)


def available() -> dict[str, str]:
    """Weight-format names with one-line descriptions, then the quantisers usable as vector formats."""
    out = dict(_DESCRIPTIONS)
    for name, desc in quantizers.available().items():
        if name not in out and _supports_weights(name):
            out[name] = f"vector format: {desc}"
    return out


@functools.cache
def parse_format(spec: str) -> WeightFormat:
    """Parse a weight format spec (module docstring) into a :class:`WeightFormat`.

    Raises :class:`InvalidSpec` for bad keys or values and :class:`UnknownQuantizer` for a name
    that is neither a weight format nor a quantiser.

    >>> parse_format("int4").spec
    'int:bits=4,scaling=mse,rht=false,block=128,outliers=0'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSpec(f"weight format must be a non-empty string, got {spec!r}")
    name, raw = quantizers.split_spec(spec)
    name = _ALIASES.get(name, name)
    if name.startswith("int") and name[3:].isdigit():
        raw.setdefault("bits", name[3:])
        name = "int"
    if name in _ELEMENT_KEYS:
        fmt = _element_format(spec, name, raw)
    else:
        fmt = _vector_format(spec, name, raw)
    _check_common(spec, fmt)
    return fmt


def _element_format(spec: str, name: str, raw: dict[str, str]) -> WeightFormat:
    defaults = _ELEMENT_KEYS[name]
    if not defaults and raw:
        raise InvalidSpec(f"format {name!r} takes no parameters, got {spec!r}")
    kw = {**defaults, **quantizers.coerce_params(f"weight format {name!r}", raw, defaults)}
    if name != "int":
        return WeightFormat(kind=name, **kw)
    if not 2 <= kw["bits"] <= 8:
        raise InvalidSpec(f"int format needs bits in 2..8, got {raw.get('bits')!r}")
    if kw["scaling"] not in ("mse", "absmax"):
        raise InvalidSpec(f"int scaling must be 'mse' or 'absmax', got {kw['scaling']!r}")
    return WeightFormat(kind="int", **kw)


def _vector_format(spec: str, name: str, raw: dict[str, str]) -> WeightFormat:
    try:
        cls, _ = quantizers.parse_spec(name)
    except UnknownQuantizer:
        raise UnknownQuantizer(f"unknown weight format or quantiser {name!r}; weight formats: "
                               f"{', '.join(_DESCRIPTIONS)}; quantisers: {', '.join(quantizers.available())}") from None
    if "seed" in raw:
        raise InvalidSpec(f"{spec!r}: the weights layer seeds each tensor's rotation itself (no 'seed' key)")
    weight_raw = {k: raw.pop(k) for k in list(raw) if k in _VECTOR_KEYS}
    kw = {**_VECTOR_KEYS, **quantizers.coerce_params(f"weight format {name!r}", weight_raw, _VECTOR_KEYS)}
    qspec = _canonical_quantizer(cls, raw)
    tile = _quantizer_tile(qspec)
    if tile is not None and "tile" in weight_raw:
        raise InvalidSpec(f"{spec!r}: {cls.name} encodes {tile[0]}×{tile[1]} tiles; 'tile' applies to quantisers "
                          "that take any vector length")
    if kw["tile"] < 1:
        raise InvalidSpec(f"{spec!r}: tile must be >= 1, got {kw['tile']}")
    return WeightFormat(kind="vq", quantizer=qspec, **kw)


def _canonical_quantizer(cls: type, raw: dict[str, str]) -> str:
    """The quantiser spec with weight defaults applied; keys set by them or differing from the class shown."""
    qspec = cls.name + (":" + ",".join(f"{k}={v}" for k, v in raw.items()) if raw else "")
    _, given = quantizers.parse_spec(qspec)  # one grammar: raises InvalidSpec for unknown keys / bad values
    class_defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    params = {**cls.weight_defaults, **given}
    try:
        probe = cls(**params)
    except TypeError as exc:
        raise InvalidSpec(f"{cls.name}: {exc}") from None
    full = {k: v for k, v in probe.params().items() if k not in ("rht", "seed")}
    shown = {k: v for k, v in full.items()
             if k == "bits" or k in cls.weight_defaults or v != class_defaults.get(k)}
    out = cls.name + (":" + ",".join(f"{k}={_text(v)}" for k, v in shown.items()) if shown else "")
    _quantizer_tile(out)  # raises InvalidSpec when the family cannot encode weight matrices
    return out


def _check_common(spec: str, fmt: WeightFormat) -> None:
    if fmt.block < 0:
        raise InvalidSpec(f"{spec!r}: block must be >= 0 (0 = one scale per row), got {fmt.block}")
    if not (math.isfinite(fmt.outliers) and 0.0 <= fmt.outliers < 0.5):
        raise InvalidSpec(f"{spec!r}: outliers must be a fraction in [0, 0.5), got {fmt.outliers}")
    _, c = fmt.tile_shape()
    if fmt.block and fmt.block % c:
        raise InvalidSpec(f"{spec!r}: block={fmt.block} must be a multiple of the tile width {c}")


@functools.cache
def _quantizer_tile(qspec: str) -> tuple[int, int] | None:
    """The quantiser's declared weight tile (None: any width); raises InvalidSpec when it has none."""
    return quantizers.get(qspec).weight_tile()


def _supports_weights(name: str) -> bool:
    cls, _ = quantizers.parse_spec(name)
    try:
        cls(**cls.weight_defaults).weight_tile()
    except InvalidSpec:
        return False
    return True


@functools.cache
def code_bytes(qspec: str, dim: int) -> int:
    """Bytes of one code of the quantiser ``qspec`` for vectors of ``dim`` values."""
    return quantizers.get(qspec).code_size_for(dim)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
