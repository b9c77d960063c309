"""``/v1/models``: compressed models (``vqsearch.weights``) served from ``settings.models_dir``.

* ``GET /v1/models`` — every subdirectory of ``models_dir`` holding a ``manifest.json``, with the
  URL of the model and of each of its shards.
* ``GET /v1/models/{model}`` — the model's manifest (ETag = SHA-256 of the served bytes).
* ``GET /v1/models/{model}/tensors/{name}?encoding=float32|float16|codes&container=npy|safetensors``
  — one tensor, streamed: decoded as ``.npy`` (default) or as a one-tensor safetensors file, or
  ``encoding=codes``: the tensor's raw Arrow record (its compressed arrays plus metadata) as a
  standalone Arrow IPC stream.
* ``GET|HEAD /v1/models/{model}/shards/{file}`` — a shard file as stored.
* ``GET|HEAD /v1/models/{model}/files/{path}`` — a copied configuration or tokenizer file.

Paths in the manifest (``shards/00000.arrows``, ``files/config.json``) are relative to the
model's URL: ``GET /v1/models/{model}/{path}`` fetches them (what ``vqsearch.weights.load(url)``
does).  Every response carries a strong ETag derived from the stored checksums and answers
``If-None-Match`` with 304.  ``Range: bytes=…`` (one range; suffix and open ranges too, with
``If-Range``) is honoured with 206 / 416 on shard files, model files and tensor bodies, so
clients can resume downloads or fetch a tensor's byte range given in the manifest.  No response
names a path on the server's disk: manifests are served without local paths, and errors name
models by their name.  Auth: any valid key (read access), as for reading collections.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from ..errors import InvalidInput, NotFound, VQSearchError
from ..weights import WeightsArchive
from ..weights.manifest import MANIFEST, public_manifest
from .auth import ReadAccess
from .collections import ERRORS
from .errors import error_response
from .state import StateDep

LOG = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)

CHUNK = 1 << 20
NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
OCTET = "application/octet-stream"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ModelStore:
    """Opens each compressed model of ``root`` once (reopened when its manifest changes)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._open: dict[str, tuple[int, WeightsArchive, bytes]] = {}
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        if self.root is None:
            raise NotFound("no models directory is configured (set VQSEARCH_MODELS_DIR)")
        if not _NAME.match(name):
            raise NotFound(f"model {name!r} not found")
        path = self.root / name
        if not (path / MANIFEST).is_file():
            raise NotFound(f"model {name!r} not found")
        return path

    def names(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.match(p.name) and (p / MANIFEST).is_file())

    def _current(self, name: str) -> tuple[WeightsArchive, bytes]:
        path = self._dir(name)
        mtime = (path / MANIFEST).stat().st_mtime_ns
        with self._lock:
            hit = self._open.get(name)
            if hit is not None and hit[0] == mtime:
                return hit[1], hit[2]
            # The archive names itself by the model's name, so its errors never show a server path.
            archive = WeightsArchive(path, label=name)
            served = json.dumps(public_manifest(archive.manifest), separators=(",", ":")).encode()
            self._open[name] = (mtime, archive, served)
            return archive, served

    def get(self, name: str) -> WeightsArchive:
        return self._current(name)[0]

    def manifest_bytes(self, name: str) -> bytes:
        """The manifest as served: JSON without local paths (version-1 manifests stored one)."""
        return self._current(name)[1]


def _store(request: Request) -> ModelStore:
    app_state = request.app.state
    store = getattr(app_state, "vq_models", None)
    if store is None:
        store = ModelStore(request.app.state.vq.settings.models_dir)
        app_state.vq_models = store
    return store


# ----------------------------------------------------------------------------- HTTP helpers
def _not_modified(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    tags = [t.strip() for t in inm.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def _parse_range(request: Request, size: int, etag: str) -> tuple[int, int] | None | Literal["bad"]:
    """The single byte range [start, end) requested, None for the whole body, "bad" if unsatisfiable."""
    header = request.headers.get("range")
    if not header:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's copy is stale: send everything
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None  # multiple or non-byte ranges: RFC 9110 lets us ignore Range
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0:
            return "bad"
        return (max(0, size - n), size)
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        return "bad"
    return (start, end)


def _ranged(request: Request, size: int, etag: str, media_type: str,
            read: Any, extra: dict[str, str] | None = None, head: bool = False) -> Response:
    """200 / 206 / 304 / 416 response over a body of ``size`` bytes produced by ``read(start, end)``."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes", **(extra or {})}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    rng = _parse_range(request, size, etag)
    if rng == "bad":
        return error_response(416, "range_not_satisfiable", f"requested range is outside the {size}-byte body",
                              headers={"Content-Range": f"bytes */{size}", **headers})
    status, (start, end) = (200, (0, size)) if rng is None else (206, rng)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if head:
        return Response(status_code=status, headers=headers, media_type=media_type)

    def body() -> Iterator[bytes]:
        for s in range(start, end, CHUNK):
            yield read(s, min(end, s + CHUNK))

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media_type)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _safetensors_bytes(name: str, arr: np.ndarray) -> bytes:
    tags = {"<f4": "F32", "<f2": "F16", "<i8": "I64", "<i4": "I32", "<i2": "I16", "|i1": "I8", "|u1": "U8",
            "<u2": "U16", "<u4": "U32", "<u8": "U64", "|b1": "BOOL", "<f8": "F64"}
    a = np.ascontiguousarray(arr)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if a.dtype.str not in tags:
        raise InvalidInput(f"cannot write dtype {a.dtype} as safetensors")
    raw = a.tobytes()
    header = json.dumps({name: {"dtype": tags[a.dtype.str], "shape": list(a.shape),
                                "data_offsets": [0, len(raw)]}}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw


# ----------------------------------------------------------------------------- endpoints
def _summary(store: ModelStore, name: str) -> dict[str, Any]:
    archive = store.get(name)
    tot = archive.manifest["totals"]
    url = f"{router.prefix}/{name}"
    return {"name": name, "url": url, "tensors": len(archive), "params": tot["params"],
            "bits_per_param": tot["bits_per_param"], "bytes": tot["bytes_on_disk"],
            "shards": [{"file": s["file"], "url": f"{url}/{s['file']}", "bytes": s["bytes"]}
                       for s in archive.manifest["shards"]],
            "files": [f["path"] for f in archive.manifest.get("files") or []]}


@router.get("", dependencies=[ReadAccess], summary="List compressed models")
async def list_models(request: Request, state: StateDep) -> dict[str, Any]:
    """Every compressed model in the models directory: its URL, size, average bits per parameter, and
    the URL of each shard (a manifest path such as ``shards/00000.arrows`` appended to the model URL)."""
    store = _store(request)

    def run() -> list[dict[str, Any]]:
        out = []
        for n in store.names():
            try:
                out.append(_summary(store, n))
            except VQSearchError as exc:  # one damaged model must not hide the others
                LOG.warning("model %r is not listed: %s", n, exc)
        return out

    return {"models": await state.read(run)}


@router.get("/{model}", dependencies=[ReadAccess], summary="Get a model's manifest")
async def get_model(model: str, request: Request, state: StateDep) -> Response:
    """The manifest: tensors (name, shape, dtype, format, params, shard, byte range, SHA-256, bits,
    SQNR, statistics), shards (file, bytes, SHA-256), the allocation and the totals."""
    store = _store(request)
    raw = await state.read(store.manifest_bytes, model)
    etag = f'"{hashlib.sha256(raw).hexdigest()[:40]}"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(raw, media_type="application/json", headers={"ETag": etag})


@router.get("/{model}/tensors/{name:path}", dependencies=[ReadAccess], summary="Download one tensor",
            responses={200: {"content": {NPY: {}, OCTET: {}, ARROW: {}},
                             "description": "The tensor (npy / safetensors) or its Arrow record."}})
async def get_tensor(
    model: str,
    name: str,
    request: Request,
    state: StateDep,
    encoding: Literal["float32", "float16", "codes"] = Query("float32", description="Decoded dtype, or the codes."),
    container: Literal["npy", "safetensors"] = Query("npy", description="File format of decoded tensors."),
) -> Response:
    """Decoded tensors are produced on request (float32 or float16; integer buffers keep their
    dtype); ``codes`` returns the stored record unchanged.  Supports ETag and Range."""
    store = _store(request)
    archive = await state.read(store.get, model)
    entry = archive.entry(name)
    etag = f'"{entry["sha256"][:40]}-{encoding}-{container if encoding != "codes" else "arrow"}"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if encoding == "codes":
        body = b"".join(await state.read(lambda: list(archive.record_stream(name))))
        media, ext = ARROW, "arrows"
    else:
        def decode() -> bytes:
            arr = archive[name]
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float16 if encoding == "float16" else np.float32)
            return _npy_bytes(arr) if container == "npy" else _safetensors_bytes(name, arr)

        body = await state.read(decode)
        media, ext = (NPY, "npy") if container == "npy" else (OCTET, "safetensors")
    disposition = {"Content-Disposition": f'attachment; filename="{filename}.{ext}"'}
    return _ranged(request, len(body), etag, media, lambda s, e: body[s:e], disposition)


async def _shard(model: str, file: str, request: Request, state: StateDep, head: bool) -> Response:
    store = _store(request)
    archive = await state.read(store.get, model)
    rel = f"shards/{file}"
    meta = next((s for s in archive.manifest["shards"] if s["file"] == rel), None)
    if meta is None:
        raise NotFound(f"model {model!r} has no shard {file!r}")
    reader = await state.read(archive.shard, rel)
    etag = f'"{meta["sha256"][:40]}"'
    return _ranged(request, reader.size, etag, ARROW, lambda s, e: reader.raw(s, e - s).tobytes(), head=head)


async def _file(model: str, path: str, request: Request, state: StateDep, head: bool) -> Response:
    store = _store(request)
    archive = await state.read(store.get, model)
    rel = f"files/{path}"
    if not any(f["path"] == rel for f in archive.files):
        raise NotFound(f"model {model!r} has no file {path!r}")
    data = await state.read(lambda: archive.file_path(rel).read_bytes())  # verified against its SHA-256
    etag = f'"{archive.file_entry(rel)["sha256"][:40]}"'
    return _ranged(request, len(data), etag, OCTET, lambda s, e: data[s:e], head=head)


@router.get("/{model}/shards/{file}", dependencies=[ReadAccess], summary="Download a shard file",
            responses={200: {"content": {ARROW: {}}}, 206: {"description": "Partial content (Range)"}})
async def get_shard(model: str, file: str, request: Request, state: StateDep) -> Response:
    """A shard as stored (Arrow IPC stream), with ETag (its SHA-256) and byte ranges."""
    return await _shard(model, file, request, state, head=False)


@router.head("/{model}/shards/{file}", dependencies=[ReadAccess], summary="Shard size and ETag")
async def head_shard(model: str, file: str, request: Request, state: StateDep) -> Response:
    """Headers of :func:`get_shard` (Content-Length, ETag, Accept-Ranges) without the body."""
    return await _shard(model, file, request, state, head=True)


@router.get("/{model}/files/{path:path}", dependencies=[ReadAccess], summary="Download a model file",
            responses={200: {"content": {OCTET: {}}}, 206: {"description": "Partial content (Range)"}})
async def get_file(model: str, path: str, request: Request, state: StateDep) -> Response:
    """A configuration or tokenizer file copied from the source model (``files`` in the manifest),
    with ETag (its SHA-256) and byte ranges."""
    return await _file(model, path, request, state, head=False)


@router.head("/{model}/files/{path:path}", dependencies=[ReadAccess], summary="Model file size and ETag")
async def head_file(model: str, path: str, request: Request, state: StateDep) -> Response:
    """Headers of :func:`get_file` without the body."""
    return await _file(model, path, request, state, head=True)
