"""Files on disk and on the network: cache folder, sha256, verified downloads, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


class ChecksumError(RuntimeError):
    """A file's sha256 does not match the one it was registered with."""


def cache_dir() -> Path:
    """Where amnet keeps downloaded weights and feature caches (``$AMNET_HOME`` overrides)."""
    root = os.environ.get("AMNET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "amnet"
    )
    return Path(root)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, memoised on (path, size, mtime) in memory and, for large files
    (trunk weights), in ``cache_dir()/hashes.json`` so start-up does not re-hash 500 MB."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    big = st.st_size > (64 << 20)
    memo_file = cache_dir() / "hashes.json"
    memo: dict[str, str] = {}
    if big:
        with contextlib.suppress(OSError, ValueError):
            memo = json.loads(memo_file.read_text())
        if "|".join(map(str, key)) in memo:
            _HASH_CACHE[key] = memo["|".join(map(str, key))]
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    _HASH_CACHE[key] = h.hexdigest()
    if big:
        memo["|".join(map(str, key))] = h.hexdigest()
        with contextlib.suppress(OSError), atomic_write(memo_file, "w") as f:
            json.dump(memo, f)
    return _HASH_CACHE[key]


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise ChecksumError unless the file's sha256 starts with ``expected`` (full or prefix)."""
    digest = sha256_file(path)
    if not expected or not digest.startswith(expected.lower()):
        raise ChecksumError(f"{path}: sha256 {digest} does not match expected {expected}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would give
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def download(url: str, dest: str | os.PathLike, sha256: str, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is already there.

    The sha256 (full hex digest or a prefix of at least 8 characters, as in torchvision's file
    names) is checked before the file is moved into place, so a bad download never lands."""
    dest = Path(dest)
    if len(sha256) < 8:
        raise ValueError("a sha256 (or a prefix of at least 8 hex characters) is required")
    if dest.exists():
        check_sha256(dest, sha256)
        return dest
    h = hashlib.sha256()
    show = progress and sys.stderr.isatty()
    with urllib.request.urlopen(url, timeout=60) as resp, atomic_write(dest) as f:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            f.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if show and total:
                print(f"\rdownloading {dest.name}: {100 * done // total}%", end="", file=sys.stderr)
        if show:
            print(file=sys.stderr)
        if not h.hexdigest().startswith(sha256.lower()):
            raise ChecksumError(
                f"download of {url} has sha256 {h.hexdigest()}, expected {sha256}; not saved"
            )
    return dest
