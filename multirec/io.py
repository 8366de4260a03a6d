"""Atomic, ownership-aware file output, inter-process locks and content fingerprints.

Every artefact multirec writes goes to a temporary sibling first and is renamed into
place, so an interrupted run never leaves something that looks finished. Directories
multirec creates carry a marker file; multirec refuses to replace a directory that
lacks it, so a mistyped ``out=`` never destroys someone else's files.

Temporary siblings are created with the modes any new file or directory gets (0666 /
0777 less the umask), so outputs are as shared as the user's other files. Their names
say which process on which host made them: a process killed with SIGKILL cannot clean
up, and the next :func:`atomic_dir` in the same place removes what dead processes left.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from multirec.errors import MultirecError

log = logging.getLogger(__name__)
OWNER_MARKER = ".multirec-owned"
# ".<name>.tmp-<pid>@<host>-<random>": a temporary sibling, or ".old-" for a replaced one.
_SCRATCH = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)@(?P<host>.+)-[0-9a-f]{8}$")
_LOCK = re.compile(r"^\..+\.multirec\.lock$")  # see sibling_lock
# Failures a user fixes by changing permissions, space or paths, not by reading a traceback.
_USER_OS_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


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


def _scratch(path: Path, kind: str) -> Path:
    """A hidden sibling of ``path`` whose name records this process and host."""
    token = secrets.token_hex(4)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}@{socket.gethostname()}-{token}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_scratch(folder: Path) -> None:
    """Remove temporary siblings and lock files in ``folder`` left by dead processes.

    Only names multirec makes are considered, directories only when they carry the
    ownership marker or are empty, and never those of a live process or another host
    (whose process ids mean nothing here). A lock file goes only if it can be locked,
    that is when no process holds it.
    """
    host = socket.gethostname()
    for p in folder.iterdir():
        if _LOCK.match(p.name):
            with suppress(MultirecError), exclusive_lock(p, 0, "holding it"):
                pass  # locked, so nobody held it; it is removed on release
            continue
        m = _SCRATCH.match(p.name)
        if m is None or m["host"] != host or _alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            if is_owned(p):
                shutil.rmtree(p, ignore_errors=True)
            else:  # killed before it wrote the marker: nothing inside
                with suppress(OSError):
                    p.rmdir()
        else:
            p.unlink(missing_ok=True)
        if not p.exists():
            log.info("removed %s, left by a killed multirec process", p)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds.

    The temporary directory lives beside ``target`` (same filesystem, so the final
    rename is atomic). An existing ``target`` is replaced only if multirec owns it.
    """
    target = Path(target)
    check_writable_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(target.parent)
    tmp = _scratch(target, "tmp")
    tmp.mkdir()
    try:
        (tmp / OWNER_MARKER).write_text("created by multirec\n")
        yield tmp
        if target.exists():
            trash = _scratch(target, "old")
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
    tmp = _scratch(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    )


def sibling_lock(target: Path) -> Path:
    """The hidden lock file beside ``target`` that :func:`remove_stale_scratch` knows."""
    return target.with_name(f".{target.name}.multirec.lock")


@contextmanager
def os_errors(verb: str, hint: str) -> Iterator[None]:
    """Report permission, read-only and out-of-space failures as one line naming the path.

    ``verb`` says what was being done (``read``, ``write``); ``hint`` what to do about it.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _USER_OS_ERRORS:
            raise
        where = exc.filename if exc.filename is not None else "a file"
        raise MultirecError(f"cannot {verb} {where} ({exc.strerror}); {hint}") from None


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` instead of killing at once.

    Cleanup then runs as it does on Ctrl-C: temporary folders are removed and worker
    processes stopped. A SIGTERM handler someone else installed (a launcher, a trainer)
    is left alone, and so is everything outside the main thread, where Python cannot
    install handlers.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def exclusive_lock(path: Path, timeout_s: float, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Another process holding it makes this one wait, logging once what it waits for,
    and give up with a one-line error after ``timeout_s`` seconds. The lock is the
    kernel's (``flock``), so a killed holder releases it; the holder removes the file
    when done, and a waiter that then finds itself holding a removed file locks afresh.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise MultirecError(
                    f"gave up after {timeout_s:g} s waiting for lock {path} (another process "
                    f"is {purpose}); run again when it has finished"
                ) from None
            if not announced:
                log.info(
                    "waiting up to %g s for another process %s (lock %s)", timeout_s, purpose, path
                )
                announced = True
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
            continue
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one can lock the old file
        os.close(fd)
