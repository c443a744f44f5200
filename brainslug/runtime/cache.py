"""The on-disk kernel cache: machine code of phase functions, keyed by content.

Every generic phase function is compiled on its own (see `jit`), and its object
code is stored under a key that hashes the LLVM IR it was compiled from (the
function renamed to a placeholder, so that the same code compiled for another
network or another kernel hits), the target (triple, CPU, features), the
optimization level, and the versions of BrainSlug (with a hash of its source
files), llvmlite and LLVM. A second `optimize()` of the same network, or of one
that shares phases with it, loads that code instead of running LLVM.

- Location: `$BRAINSLUG_CACHE_DIR`, else `$XDG_CACHE_HOME/brainslug`, else
  `~/.cache/brainslug`; objects live in `objects/<key>.o`.
- `BRAINSLUG_CACHE=0` (or `off`, `false`, `no`) disables it: nothing is read
  or written.
- Writes are atomic (a temporary file, then a rename), so concurrent processes
  at worst compile the same thing twice. Each file starts with a digest of its
  key and content; a file that cannot be read, or whose digest is wrong, is a
  miss (LLVM would abort on a damaged object, and a valid object stored under
  another entry's key would run the wrong code), and one that cannot be written
  is skipped: the cache never makes a compile fail.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

FORMAT = "2"
"""Part of every key: bump it when the layout of cached objects, or the way they
are compiled from the same IR (`X86Backend.compile_object`), changes."""


def enabled() -> bool:
    return os.environ.get("BRAINSLUG_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def directory() -> Path:
    env = os.environ.get("BRAINSLUG_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "brainslug" if xdg else Path.home() / ".cache" / "brainslug"


@functools.cache
def source_fingerprint() -> str:
    """A hash of BrainSlug's own source files: an edited compiler (an editable
    install, a development tree) never meets kernels or plans of another."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def versions() -> str:
    """BrainSlug (version and source), llvmlite and LLVM versions (part of every key)."""
    import llvmlite
    import llvmlite.binding as llvm

    try:
        from importlib.metadata import version

        bs = version("brainslug")
    except Exception:  # not installed: the source tree
        bs = "src"
    return (f"brainslug={bs}+{source_fingerprint()};llvmlite={llvmlite.__version__};"
            f"llvm={llvm.llvm_version_info}")


def key(*parts: str) -> str:
    """A hex key hashing `parts` with the format and the versions."""
    h = hashlib.sha256()
    for p in (FORMAT, versions(), *parts):
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(k: str) -> Path:
    return directory() / "objects" / f"{k}.o"


_MAGIC = b"BSK2"


def _digest(k: str, data: bytes) -> bytes:
    """What a file stores for key `k`: the digest ties its content to its key."""
    return hashlib.sha256(k.encode() + b"\0" + data).digest()


def load(k: str) -> bytes | None:
    """The cached object for key `k`, or None."""
    if not enabled():
        return None
    try:
        blob = _path(k).read_bytes()
    except OSError:
        return None
    head, digest, data = blob[:4], blob[4:36], blob[36:]
    if head != _MAGIC or _digest(k, data) != digest:
        return None
    return data


def store(k: str, data: bytes) -> None:
    """Caches `data` under key `k` (best effort)."""
    if not enabled():
        return
    path = _path(k)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".o")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _digest(k, data) + data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
