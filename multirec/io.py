"""Atomic, ownership-aware file output and content fingerprints.

Every artefact multirec writes goes to a temporary sibling first and is renamed into
place, so an interrupted run never leaves something that looks finished. Directories
multirec creates carry a marker file; multirec refuses to replace a directory that
lacks it, so a mistyped ``out=`` never destroys someone else's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from multirec.errors import MultirecError

OWNER_MARKER = ".multirec-owned"


def fingerprint(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_owned(path: Path) -> bool:
    """True when ``path`` is a directory multirec created (it carries the marker)."""
    return (path / OWNER_MARKER).is_file()


def check_writable_target(path: Path) -> None:
    """Refuse to write into ``path`` if it exists, is not empty and multirec did not create it."""
    if path.exists() and not path.is_dir():
        raise MultirecError(f"{path} exists and is a file; choose another output directory")
    if path.is_dir() and any(path.iterdir()) and not is_owned(path):
        raise MultirecError(
            f"{path} holds files multirec did not create; refusing to overwrite them "
            "(choose an empty or new output directory)"
        )


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds.

    The temporary directory lives beside ``target`` (same filesystem, so the final
    rename is atomic). An existing ``target`` is replaced only if multirec owns it.
    """
    target = Path(target)
    check_writable_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / OWNER_MARKER).write_text("created by multirec\n")
        yield tmp
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    )
