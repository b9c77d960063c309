"""Name → quantiser class registry and spec-string parsing.

A spec is ``name[:key=value,...]``, e.g. ``"pq:m=96,nbits=4"`` or ``"e8p:rht=true"``.
Values are converted to the type of the constructor's default (int, float, bool, str).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidSpec, UnknownQuantizer
from .base import Quantizer

_BY_NAME: dict[str, type[Quantizer]] = {}
_ALIASES: dict[str, str] = {}
_BY_ID: dict[int, type[Quantizer]] = {}


def register(cls: type[Quantizer] | None = None, *, aliases: tuple[str, ...] = ()):
    """Class decorator: register a quantiser under ``cls.name`` (plus aliases) and ``cls.codec_id``.

    Names, aliases and codec ids must be unique; a clash raises ``TypeError`` at import time.
    """

    def wrap(c: type[Quantizer]) -> type[Quantizer]:
        if not c.name or c.codec_id <= 0:
            raise TypeError(f"{c.__name__} needs a name and a positive codec_id")
        if c.name in _BY_NAME or c.name in _ALIASES or c.codec_id in _BY_ID:
            raise TypeError(f"duplicate quantiser registration: {c.name} / {c.codec_id}")
        clash = [a for a in aliases if a in _ALIASES or a in _BY_NAME]
        if clash:
            raise TypeError(f"{c.name}: aliases {clash} are already registered")
        _BY_NAME[c.name] = c
        _BY_ID[c.codec_id] = c
        for a in aliases:
            _ALIASES[a] = c.name
        return c

    return wrap(cls) if cls is not None else wrap


def _coerce(owner: str, key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if default is None:
            for conv in (int, float):
                try:
                    return conv(raw)
                except ValueError:
                    pass
        return raw
    except ValueError:
        raise InvalidSpec(
            f"{owner}: cannot parse {key}={raw!r} as {type(default).__name__}"
        ) from None


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """The spec grammar ``name[:key=value,...]`` → (lower-case name, raw string values by key).

    One grammar for every spec string: quantiser specs here and weight formats
    (:mod:`vqsearch.weights.formats`) both split with it and convert with :func:`coerce_params`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSpec(f"spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    raw: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidSpec(f"{spec!r}: expected key=value, got {part!r}")
        raw[key.strip()] = value.strip()
    return name.strip().lower(), raw


def coerce_params(owner: str, raw: dict[str, str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Raw spec values → keyword arguments, each converted to the type of its default.

    Booleans accept 1/true/yes/on and 0/false/no/off; a key without a default raises
    :class:`InvalidSpec` naming ``owner`` and the valid keys.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in defaults:
            raise InvalidSpec(f"{owner} has no parameter {key!r}; valid: {', '.join(defaults)}")
        out[key] = _coerce(owner, key, value, defaults[key])
    return out


def parse_spec(spec: str) -> tuple[type[Quantizer], dict[str, Any]]:
    """Split a spec string into (class, constructor kwargs)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSpec(f"quantiser spec must be a non-empty string, got {spec!r}")
    name, raw = split_spec(spec)
    name = _ALIASES.get(name, name)
    if name not in _BY_NAME:
        raise UnknownQuantizer(
            f"unknown quantiser {name!r}; available: {', '.join(sorted(_BY_NAME))}"
        )
    cls = _BY_NAME[name]
    sig = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    return cls, coerce_params(cls.name, raw, sig)


def get(spec: str, **overrides: Any) -> Quantizer:
    """Build an unfitted quantiser from a spec string; keyword overrides win over the spec."""
    cls, kwargs = parse_spec(spec)
    kwargs.update(overrides)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InvalidSpec(f"{cls.name}: {exc}") from None


def available() -> dict[str, str]:
    """Registered quantiser names with one-line descriptions."""
    return {name: _BY_NAME[name].description for name in sorted(_BY_NAME)}


def codec_ids() -> dict[int, str]:
    """Stable codec id → registered quantiser name, in id order."""
    return {codec_id: _BY_ID[codec_id].name for codec_id in sorted(_BY_ID)}


def by_codec_id(codec_id: int) -> type[Quantizer]:
    """The quantiser class registered under ``codec_id``; raises ``UnknownQuantizer``."""
    if codec_id not in _BY_ID:
        raise UnknownQuantizer(f"no quantiser with codec id {codec_id}")
    return _BY_ID[codec_id]


def from_bytes(blob: bytes) -> Quantizer:
    """Restore a fitted quantiser from :meth:`Quantizer.to_bytes` output."""
    from .serialize import load_quantizer

    return load_quantizer(blob, _BY_ID)
