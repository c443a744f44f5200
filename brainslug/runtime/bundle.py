"""The BrainSlug file: one file holding a saved plan, checked on load.

Layout (little-endian):

    magic  b"BSLUG\\r\\n\\x1a"        8 bytes
    format u32                      FORMAT
    length u64                      of the manifest
    manifest                        JSON: what the frontend saved, and the table
                                    of sections {name: [offset, size, sha256]}
    sections                        raw bytes, one after the other
    digest                          sha256 of everything before it (32 bytes)

The manifest and the tensors (`encode_tensors`, the safetensors layout) are
data, never code. The sections named `objects/...` are machine code that is
linked into the process on load, like a shared library's.

Every way a file can be damaged (truncated, altered, not a BrainSlug file at
all) is a `BundleError` (a ValueError) naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAGIC = b"BSLUG\r\n\x1a"
FORMAT = 1
"""Bump when the layout, or the meaning of the manifest's keys, changes."""

_HEAD = struct.Struct("<8sIQ")
_DIGEST = 32


class BundleError(ValueError):
    """A file that is not a readable BrainSlug file."""


def to_bytes(manifest: Mapping[str, Any], sections: Mapping[str, bytes]) -> bytes:
    """The file of `manifest` (plain JSON) and `sections`, as bytes."""
    table: dict[str, list[Any]] = {}
    offset = 0
    for name, data in sections.items():
        table[name] = [offset, len(data), hashlib.sha256(data).hexdigest()]
        offset += len(data)
    head = json.dumps({**manifest, "sections": table}, allow_nan=False).encode()
    body = b"".join([_HEAD.pack(MAGIC, FORMAT, len(head)), head, *sections.values()])
    return body + hashlib.sha256(body).digest()


def write(path: str | os.PathLike[str], manifest: Mapping[str, Any],
          sections: Mapping[str, bytes]) -> None:
    """Writes the file of `manifest` and `sections` to `path`, atomically (a
    temporary file in the same directory, then a rename)."""
    data = to_bytes(manifest, sections)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Bundle:
    """A BrainSlug file read and checked: its manifest and its sections."""

    def __init__(self, path: str | os.PathLike[str], data: bytes):
        self.path = str(path)
        self._data = memoryview(data)
        self.manifest, self._start = self._check(data)

    def _fail(self, what: str) -> BundleError:
        return BundleError(f"{self.path}: {what}")

    def _check(self, data: bytes) -> tuple[dict[str, Any], int]:
        if len(data) < _HEAD.size or data[:len(MAGIC)] != MAGIC:
            kind = "an empty file" if not data else "not a BrainSlug file (no BrainSlug header)"
            raise self._fail(f"{kind}: brainslug.load reads files written by brainslug.save")
        _, fmt, length = _HEAD.unpack_from(data)
        if fmt != FORMAT:
            raise self._fail(f"file format {fmt}, this BrainSlug reads format {FORMAT}: save "
                             f"the model again with this version")
        start = _HEAD.size + length
        if start + _DIGEST > len(data):
            raise self._fail(f"truncated: {len(data)} bytes, the header alone needs "
                             f"{start + _DIGEST}")
        try:
            manifest = json.loads(bytes(data[_HEAD.size:start]))
            sections = manifest["sections"]
            end = start + sum(size for _, size, _ in sections.values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise self._fail(f"damaged: its manifest does not parse ({e})") from None
        if len(data) != end + _DIGEST:
            what = "truncated" if len(data) < end + _DIGEST else "damaged"
            raise self._fail(f"{what}: {len(data)} bytes, its manifest describes "
                             f"{end + _DIGEST}")
        if hashlib.sha256(data[:end]).digest() != data[end:]:
            raise self._fail("damaged: its sha256 checksum does not match its content "
                             "(the file was altered or corrupted after it was written)")
        return manifest, start

    def expect(self, kind: str, version: int, wanted: str) -> dict[str, Any]:
        """The manifest of a plan of `kind` encoded as `version`; BundleError
        saying the file holds a plan of another kind (not `wanted`) or encoding."""
        m = self.manifest
        if m.get("kind") != kind:
            raise self._fail(f"holds a {m.get('kind')!r} plan, not {wanted}")
        if m.get("version") != version:
            raise self._fail(f"plan encoding {m.get('version')}, this BrainSlug reads "
                             f"{version}: save the model again")
        return m

    def names(self) -> list[str]:
        return list(self.manifest["sections"])

    def section(self, name: str) -> memoryview:
        """The bytes of section `name` (the whole file's checksum covers them;
        each section's own is for tools that read one)."""
        try:
            offset, size, _ = self.manifest["sections"][name]
        except (KeyError, ValueError, TypeError):
            raise self._fail(f"damaged: it has no section {name!r}") from None
        return self._data[self._start + offset: self._start + offset + size]


def read(path: str | os.PathLike[str]) -> Bundle:
    """The checked bundle at `path` (OSError when it can't be read, BundleError
    when it is not an intact BrainSlug file)."""
    return Bundle(path, Path(path).read_bytes())


def from_bytes(data: bytes, name: str = "<bytes>") -> Bundle:
    return Bundle(name, data)


# -------------------------------------------------------------------- tensors

DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "BOOL": 1}
"""The safetensors dtype names and their sizes."""


def encode_tensors(tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]],
                   metadata: Mapping[str, str] | None = None) -> bytes:
    """Tensors (name -> (safetensors dtype, shape, raw little-endian bytes)) in
    the safetensors layout: a u64 header length, a JSON header, the data."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # (the format aligns the data to 8 bytes)
    return b"".join([struct.pack("<Q", len(head)), head, *(raw for _, _, raw in tensors.values())])


def decode_tensors(data: memoryview | bytes) -> dict[str, tuple[str, tuple[int, ...], memoryview]]:
    """The tensors of `encode_tensors`'s layout (ValueError when inconsistent)."""
    view = memoryview(data)
    (n,) = struct.unpack_from("<Q", view)
    header = json.loads(bytes(view[8:8 + n]))
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, d in header.items():
        begin, end = d["data_offsets"]
        shape = tuple(int(s) for s in d["shape"])
        size = DTYPES[d["dtype"]]
        count = 1
        for s in shape:
            count *= s
        if end - begin != count * size or base + end > len(view):
            raise ValueError(f"tensor {name!r}: {end - begin} bytes for shape {shape}")
        out[name] = (d["dtype"], shape, view[base + begin: base + end])
    return out
