"""A compressed model served over HTTP (``vqsearch serve --models-dir``), read lazily with a disk cache.

``weights.load("http://host:8000/v1/models/minilm", api_key=...)`` returns a
:class:`RemoteArchive`.  Opening it fetches only the manifest (revalidated with its ETag).  A
tensor's record is fetched the first time it is read, with an HTTP Range request for its byte
range in its shard (``GET {model_url}/shards/00000.arrows``, ``If-Range`` pinned to the shard's
checksum so a model replaced on the server is never mixed with the old one), checked against the
manifest's SHA-256, and stored in the cache.  :meth:`RemoteArchive.prefetch` fetches many records
with one request per shard.  Decoding is the local archive's, so tensors are bit-for-bit the same.

The cache (``cache_dir``; default ``$VQSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vqsearch``,
else ``~/.cache/vqsearch``) is content-addressed: ``blobs/ab/<sha256>`` holds records and model
files under their SHA-256, so it is shared by every model and URL and never stale.  Blobs are
written to a unique temporary file and renamed into place, so concurrent processes (which write
identical bytes) never see a partial blob; a blob that fails its checksum when read (a crash
mid-write on a filesystem without ordered renames) is fetched again.  When the server cannot be
reached, a manifest cached earlier is used, with a warning, so a model read once works offline.

Only the standard library's HTTP client is used (no extra dependency).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import Conflict, CorruptData, InvalidInput, NotFound, VQSearchError
from .archive import Archive
from .manifest import parse_manifest
from .shards import sha256

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class RemoteError(VQSearchError, OSError):
    """A model server could not be reached, or answered with an error other than 404."""

    code = "remote_error"
    http_status = 502


def default_cache_dir() -> Path:
    """``$VQSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vqsearch``, else ``~/.cache/vqsearch``."""
    env = os.environ.get("VQSEARCH_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vqsearch"


class BlobCache:
    """Content-addressed files ``root/blobs/ab/<sha256>``, written atomically (safe under concurrent use)."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise CorruptData(f"not a SHA-256 digest: {digest!r}")
        return self.root / "blobs" / digest[:2] / digest

    def get(self, digest: str, check: bool = True) -> np.ndarray | None:
        """The blob (a read-only memory map) when present and, with ``check``, intact; else None."""
        p = self.path(digest)
        try:
            data = _map(p)
        except FileNotFoundError:
            return None
        if check and sha256(data) != digest:
            log.warning("cache blob %s fails its checksum; fetching it again", p)
            del data
            p.unlink(missing_ok=True)
            return None
        return data

    def put(self, digest: str, source: BinaryIO, length: int, where: str) -> np.ndarray:
        """Copy ``length`` bytes of ``source`` into the blob ``digest``, checking the digest first."""
        p = self.path(digest)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".part-")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                left = length
                while left > 0:
                    chunk = source.read(min(_CHUNK, left))
                    if not chunk:
                        raise CorruptData(f"{where}: the server sent {length - left} of {length} bytes")
                    h.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
            if h.hexdigest() != digest:
                raise CorruptData(f"{where}: downloaded bytes fail their SHA-256 checksum")
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return _map(p)

    def manifest_path(self, url: str) -> Path:
        return self.root / "manifests" / (hashlib.sha256(url.encode()).hexdigest()[:40] + ".json")

    def write_json(self, path: Path, obj: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(obj, out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Http:
    """GET requests with a bearer key, mapping failures to typed errors that name the URL."""

    def __init__(self, api_key: str | None, timeout: float) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise InvalidInput("api_key must be a non-empty string")
        self.api_key = api_key
        self.timeout = float(timeout)

    def open(self, url: str, label: str, headers: dict[str, str] | None = None):
        """The response object; 304 returns None.  4xx/5xx raise NotFound or RemoteError."""
        h = {"Accept": "*/*", "User-Agent": "vqsearch-weights", **(headers or {})}
        if self.api_key is not None:
            h["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, headers=h, method="GET")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # the scheme was checked: http(s) only
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None
            code, message = _error_of(exc)
            if exc.code == 404:
                raise NotFound(f"{label}: {message}") from None
            raise RemoteError(f"GET {label}: HTTP {exc.code} {code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach {label}: {reason}") from None


def _error_of(exc: urllib.error.HTTPError) -> tuple[str, str]:
    """The server's ``{"error", "message"}`` body, or the status text."""
    try:
        body = json.loads(exc.read(65536) or b"{}")
        return str(body.get("error", "error")), str(body.get("message", exc.reason))
    except (ValueError, OSError, AttributeError):
        return "error", str(exc.reason)


def _label(url: str) -> str:
    """The URL without credentials or query (for messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RemoteArchive(Archive):
    """A served compressed model (see the module docstring); build it with :func:`vqsearch.weights.load`."""

    def __init__(self, url: str, *, api_key: str | None = None, cache_dir: str | os.PathLike | None = None,
                 cache: bool = False, verify: bool = True, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"not an http(s) model URL: {_label(url)!r}")
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._http = _Http(api_key, timeout)
        self.blobs = BlobCache(cache_dir)
        label = _label(self.url)
        # Records are always verified before they enter the cache, whatever ``verify`` says.
        super().__init__(self._fetch_manifest(label), label, cache=cache, verify=verify)
        self._shard_etags = {s["file"]: f'"{s["sha256"][:40]}"' for s in self.manifest["shards"]}

    def _fetch_manifest(self, label: str) -> dict[str, Any]:
        cached_path = self.blobs.manifest_path(self.url)
        cached = None
        if cached_path.is_file():
            try:
                cached = json.loads(cached_path.read_text())
            except (ValueError, OSError):
                cached = None
        headers = {"Accept": "application/json"}
        if cached is not None and cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        try:
            resp = self._http.open(self.url, label, headers)
        except RemoteError as exc:
            if cached is None or not str(exc).startswith("cannot reach"):
                raise
            log.warning("%s; using the manifest cached on %s", exc, cached_path)
            return parse_manifest(json.dumps(cached["manifest"]), label)
        if resp is None:  # 304: the cached manifest is current
            return parse_manifest(json.dumps(cached["manifest"]), label)
        with resp:
            raw = resp.read()
            etag = resp.headers.get("ETag")
        manifest = parse_manifest(raw, label)
        self.blobs.write_json(cached_path, {"url": self.url, "etag": etag, "manifest": manifest})
        return manifest

    # ------------------------------------------------------------------ records
    def _record_bytes(self, name: str) -> np.ndarray:
        e = self.entry(name)
        data = self.blobs.get(e["sha256"], check=name not in self._verified)
        if data is None:
            self._download([name])
            data = self.blobs.get(e["sha256"])
            if data is None:  # pragma: no cover - removed between the write and this read
                raise CorruptData(f"{self.label}: cache blob of {name!r} vanished")
        with self._lock:
            self._verified.add(name)  # BlobCache checked the digest
        return data

    def prefetch(self, names: Iterable[str] | None = None) -> int:
        """Fetch the records of ``names`` (default: all) that are not cached, one request per shard.

        Returns the number of records downloaded.
        """
        wanted = list(self._entries) if names is None else [self.entry(n)["name"] for n in names]
        missing = [n for n in wanted if not self.blobs.path(self._entries[n]["sha256"]).is_file()]
        if missing:
            self._download(missing)
        return len(missing)

    def _download(self, names: list[str]) -> None:
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for n in names:
            e = self._entries[n]
            by_shard.setdefault(e["shard"], []).append(e)
        for shard, entries in by_shard.items():
            entries.sort(key=lambda e: int(e["offset"]))
            start = int(entries[0]["offset"])
            end = max(int(e["offset"]) + int(e["length"]) for e in entries)
            where = f"{self.label}/{shard}"
            headers = {"Range": f"bytes={start}-{end - 1}", "If-Range": self._shard_etags.get(shard, '""')}
            resp = self._http.open(self._url_of(shard), where, headers)
            if resp is None:  # pragma: no cover - we never send If-None-Match here
                raise RemoteError(f"{where}: unexpected 304")
            with resp:
                if resp.status != 206 or resp.headers.get("Content-Range", "").split("/")[0] != \
                        f"bytes {start}-{end - 1}":
                    raise Conflict(f"{where}: the served shard no longer matches the manifest (the model changed "
                                   "on the server); load the model again")
                pos = start
                for e in entries:
                    off, length = int(e["offset"]), int(e["length"])
                    if off < pos:
                        raise CorruptData(f"{where}: records {e['name']!r} overlaps the one before it")
                    _skip(resp, off - pos, where)
                    self.blobs.put(e["sha256"], resp, length, f"{where} ({e['name']!r})")
                    pos = off + length

    def _url_of(self, rel: str) -> str:
        return f"{self.url}/{urllib.parse.quote(rel, safe='/')}"

    # ------------------------------------------------------------------ model files
    def file_path(self, rel: str) -> Path:
        entry = self.file_entry(rel)
        digest = entry["sha256"]
        if self.blobs.get(digest) is None:
            resp = self._http.open(self._url_of(entry["path"]), f"{self.label}/{entry['path']}")
            with resp:
                self.blobs.put(digest, resp, int(entry["bytes"]), f"{self.label}/{entry['path']}")
        return self.blobs.path(digest)


def _map(path: Path) -> np.ndarray:
    """A read-only memory map of ``path`` (an empty array for an empty file, which mmap refuses)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def _skip(stream: BinaryIO, n: int, where: str) -> None:
    while n > 0:
        chunk = stream.read(min(_CHUNK, n))
        if not chunk:
            raise CorruptData(f"{where}: the server's response ended early")
        n -= len(chunk)
