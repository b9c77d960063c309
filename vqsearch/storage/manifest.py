"""Manifest versions: ``_manifests/%08d.json``, one per committed version.

A manifest lists everything a reader needs for one version: the layout, the
opaque index config, the quantiser blobs (by sha256), the retention/compaction
policy and every segment with its row count, byte size, id range, per-column
CRC-32 and (optionally) its current deletion file.  Segment, deletion and blob
files are immutable and shared between versions; a version is published by
atomically renaming its manifest into place, so a reader sees a version either
completely or not at all.

On disk::

    {"format": "vqsearch.manifest", "format_version": 1, "crc32": <crc of body>, "body": {...}}

Nothing read back is trusted: every field is type- and range-checked and file
names must match the fixed patterns below (no path traversal).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import CorruptData, NotFound
from ._fsutil import atomic_write
from .config import Layout, StorePolicy, check_name

MANIFEST_DIR = "_manifests"
SEGMENT_DIR = "segments"
DELETION_DIR = "deletions"
BLOB_DIR = "quantizers"
FORMAT = "vqsearch.manifest"
FORMAT_VERSION = 1

_SEGMENT_RE = re.compile(r"^segments/[0-9a-f]{32}\.arrow$")
_DELETION_RE = re.compile(r"^deletions/[0-9a-f]{32}\.arrow$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_RE = re.compile(r"^(\d{8,})\.json$")
_U64_MAX = (1 << 64) - 1
MAX_VERSION = 10**12


def manifest_name(version: int) -> str:
    return f"{version:08d}.json"


def blob_file(sha256: str) -> str:
    return f"{BLOB_DIR}/{sha256}.bin"


@dataclass(frozen=True)
class DeletionEntry:
    """A deletion file: sorted row positions of one segment that are dead."""

    file: str
    count: int
    size: int
    crc: int


@dataclass(frozen=True)
class SegmentEntry:
    """One immutable segment file plus its current deletion file (if any)."""

    file: str
    rows: int
    size: int
    min_id: int
    max_id: int
    checksums: dict[str, int]
    created: int
    deletion: DeletionEntry | None = None

    @property
    def dead_rows(self) -> int:
        return 0 if self.deletion is None else self.deletion.count

    @property
    def live_rows(self) -> int:
        return self.rows - self.dead_rows


@dataclass(frozen=True)
class BlobEntry:
    """An opaque blob stored as ``quantizers/<sha256>.bin``."""

    sha256: str
    size: int

    @property
    def file(self) -> str:
        return blob_file(self.sha256)


@dataclass(frozen=True)
class Manifest:
    """The complete description of one store version."""

    version: int
    timestamp: float
    operation: str
    layout: Layout
    policy: StorePolicy
    config: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, BlobEntry] = field(default_factory=dict)
    codecs: dict[str, str] = field(default_factory=dict)
    segments: tuple[SegmentEntry, ...] = ()

    @property
    def num_rows(self) -> int:
        """Live rows in this version."""
        return sum(s.live_rows for s in self.segments)

    def files(self) -> set[str]:
        """Relative paths of every data file this version references."""
        out = {b.file for b in self.blobs.values()}
        for s in self.segments:
            out.add(s.file)
            if s.deletion is not None:
                out.add(s.deletion.file)
        return out

    def evolve(self, **changes: Any) -> Manifest:
        return replace(self, **changes)

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "timestamp": self.timestamp, "operation": self.operation,
            "layout": self.layout.to_json(), "policy": self.policy.to_json(), "config": self.config,
            "blobs": {k: {"sha256": b.sha256, "size": b.size} for k, b in self.blobs.items()},
            "codecs": dict(self.codecs),
            "segments": [_segment_to_json(s) for s in self.segments],
        }

    @classmethod
    def from_json(cls, body: object, *, source: str) -> Manifest:
        if not isinstance(body, dict):
            raise CorruptData(f"{source}: manifest body is not an object")
        try:
            version = _int(body["version"], "version", 0, MAX_VERSION)
            ts = body["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise ValueError("timestamp is not a number")
            op = body["operation"]
            if not isinstance(op, str):
                raise ValueError("operation is not a string")
            config = body["config"]
            if not isinstance(config, dict):
                raise ValueError("config is not an object")
            blobs = {}
            for k, b in _dict(body["blobs"], "blobs").items():
                b = _dict(b, f"blob {k!r}")
                sha = b["sha256"]
                if not isinstance(sha, str) or not _SHA_RE.match(sha):
                    raise ValueError(f"blob {k!r} has an invalid sha256")
                blobs[k] = BlobEntry(sha, _int(b["size"], "blob size", 0, 1 << 40))
            codecs = {check_name(k, "codec"): v for k, v in _dict(body["codecs"], "codecs").items()}
            if not all(isinstance(v, str) for v in codecs.values()):
                raise ValueError("codec labels must be strings")
            segments = tuple(_segment_from_json(s) for s in _list(body["segments"], "segments"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData(f"{source}: invalid manifest: {exc}") from None
        seen: set[str] = set()
        for s in segments:
            if s.file in seen:
                raise CorruptData(f"{source}: segment {s.file} is listed twice")
            seen.add(s.file)
        layout = Layout.from_json(body.get("layout"), source=source)
        for s in segments:
            expected = {"id", "_id_order", *(f"code:{c}" for c in layout.code_columns)}
            lacking = sorted(expected - set(s.checksums))
            if lacking:
                raise CorruptData(f"{source}: segment {s.file} lacks checksums for {lacking}")
        return cls(version=version, timestamp=float(ts), operation=op, layout=layout,
                   policy=StorePolicy.from_json(body.get("policy"), source=source), config=config,
                   blobs=blobs, codecs=codecs, segments=segments)


def _int(v: object, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an int in [{lo}, {hi}], got {v!r}")
    return v


def _dict(v: object, what: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{what} is not an object")
    return v


def _list(v: object, what: str) -> list:
    if not isinstance(v, list):
        raise ValueError(f"{what} is not a list")
    return v


def _segment_to_json(s: SegmentEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"file": s.file, "rows": s.rows, "size": s.size, "min_id": s.min_id,
                           "max_id": s.max_id, "checksums": dict(s.checksums), "created": s.created,
                           "deletion": None}
    if s.deletion is not None:
        d = s.deletion
        out["deletion"] = {"file": d.file, "count": d.count, "size": d.size, "crc": d.crc}
    return out


def _segment_from_json(obj: object) -> SegmentEntry:
    obj = _dict(obj, "segment")
    file = obj["file"]
    if not isinstance(file, str) or not _SEGMENT_RE.match(file):
        raise ValueError(f"segment file name {file!r} is not valid")
    rows = _int(obj["rows"], "rows", 1, (1 << 32) - 1)
    checksums = {}
    for k, v in _dict(obj["checksums"], "checksums").items():
        if not isinstance(k, str):
            raise ValueError("checksum keys must be strings")
        checksums[k] = _int(v, f"checksum of {k!r}", 0, 0xFFFFFFFF)
    deletion = None
    if obj["deletion"] is not None:
        d = _dict(obj["deletion"], "deletion")
        dfile = d["file"]
        if not isinstance(dfile, str) or not _DELETION_RE.match(dfile):
            raise ValueError(f"deletion file name {dfile!r} is not valid")
        deletion = DeletionEntry(dfile, _int(d["count"], "deletion count", 1, rows),
                                 _int(d["size"], "deletion size", 1, 1 << 40), _int(d["crc"], "crc", 0, 0xFFFFFFFF))
    min_id = _int(obj["min_id"], "min_id", 0, _U64_MAX)
    max_id = _int(obj["max_id"], "max_id", min_id, _U64_MAX)
    return SegmentEntry(file=file, rows=rows, size=_int(obj["size"], "size", 1, 1 << 42), min_id=min_id,
                        max_id=max_id, checksums=checksums, created=_int(obj["created"], "created", 0, MAX_VERSION),
                        deletion=deletion)


# ---------------------------------------------------------------------- disk
def encode_manifest(m: Manifest) -> bytes:
    body = m.to_json()
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "crc32": zlib.crc32(canon.encode()), "body": body}
    return json.dumps(doc, sort_keys=True, indent=1, allow_nan=False).encode()


def decode_manifest(data: bytes, *, source: str) -> Manifest:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptData(f"{source}: manifest is not valid JSON (truncated or corrupted?): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptData(f"{source}: not a vqsearch manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CorruptData(f"{source}: unsupported manifest format_version {doc.get('format_version')!r}")
    body = doc.get("body")
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
    if zlib.crc32(canon.encode()) != doc.get("crc32"):
        raise CorruptData(f"{source}: manifest checksum mismatch")
    m = Manifest.from_json(body, source=source)
    return m


def manifest_path(root: Path, version: int) -> Path:
    return Path(root) / MANIFEST_DIR / manifest_name(version)


def list_versions(root: Path) -> list[int]:
    """Versions with a manifest file on disk, ascending (temp files ignored)."""
    try:
        names = os.listdir(Path(root) / MANIFEST_DIR)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _MANIFEST_RE.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def read_manifest(root: Path, version: int) -> Manifest:
    """Read and validate one manifest (``NotFound`` if absent, ``CorruptData`` if invalid)."""
    path = manifest_path(root, version)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"version {version} of {root} does not exist (retained: {list_versions(root)})") from None
    m = decode_manifest(data, source=str(path))
    if m.version != version:
        raise CorruptData(f"{path}: manifest says version {m.version}")
    return m


def write_manifest(root: Path, m: Manifest) -> None:
    """Publish a manifest atomically (temp, fsync, rename, fsync dir); never overwrites."""
    atomic_write(manifest_path(root, m.version), encode_manifest(m), overwrite=False)
