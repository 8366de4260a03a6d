"""Atomic output: file modes follow the umask, leftovers of killed processes are removed,
OS failures are one line, and the inter-process lock waits, times out and cleans up."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from multirec.errors import MultirecError
from multirec.io import (
    OWNER_MARKER,
    atomic_dir,
    atomic_write_bytes,
    exclusive_lock,
    os_errors,
    remove_stale_scratch,
    sibling_lock,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    with atomic_dir(tmp_path / "out") as tmp:
        atomic_write_bytes(tmp / "b.bin", b"x")
    assert mode(tmp_path / "a.json") == 0o666 & ~mask
    assert mode(tmp_path / "out") == 0o777 & ~mask
    assert mode(tmp_path / "out" / "b.bin") == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "out"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_processes_on_this_host_are_removed(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    owned = tmp_path / f".ds.tmp-{dead}@{host}-0123abcd"
    owned.mkdir()
    (owned / OWNER_MARKER).touch()
    (owned / "items.parquet").write_bytes(b"half")
    empty = tmp_path / f".ds.tmp-{dead}@{host}-00000000"
    empty.mkdir()
    old = tmp_path / f".ds.old-{dead}@{host}-11111111"
    old.mkdir()
    (old / OWNER_MARKER).touch()
    tmp_file = tmp_path / f".caches.json.tmp-{dead}@{host}-22222222"
    tmp_file.write_bytes(b"{")
    sibling_lock(tmp_path / "old-ds").touch()  # its holder was killed
    held = sibling_lock(tmp_path / "ds")
    kept = [
        tmp_path / f".ds.tmp-{os.getpid()}@{host}-33333333",  # a live process's
        tmp_path / f".ds.tmp-{dead}@another-host-44444444",  # pid means nothing here
        tmp_path / f".ds.tmp-{dead}@{host}-55555555",  # not multirec's: no marker, not empty
        tmp_path / ".ds.tmp-notapid",
    ]
    for p in kept:
        p.mkdir()
        (p / "user-file").touch()
    (tmp_path / ".editor.lock").touch()  # not multirec's
    with exclusive_lock(held, 0, "preparing ds"), atomic_dir(tmp_path / "ds") as tmp:
        (tmp / "x").touch()
        assert held.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["ds", ".editor.lock", *(p.name for p in kept)])
    remove_stale_scratch(tmp_path)  # idempotent
    assert all((p / "user-file").exists() for p in kept)


def test_os_errors_are_one_line_naming_the_path(tmp_path):
    path = tmp_path / "x.csv"
    with pytest.raises(MultirecError) as err, os_errors("read", "make it readable"):
        raise PermissionError(13, "Permission denied", str(path))
    assert str(err.value) == f"cannot read {path} (Permission denied); make it readable"
    with pytest.raises(FileNotFoundError), os_errors("read", "make it readable"):
        raise FileNotFoundError(2, "No such file or directory", str(path))


def test_lock_waits_for_the_holder_then_removes_its_file(tmp_path, caplog):
    lock = tmp_path / "x.lock"
    order = []

    def second():
        with exclusive_lock(lock, 10, "building x"):
            order.append("second")

    with caplog.at_level(logging.INFO, logger="multirec"):
        with exclusive_lock(lock, 10, "building x"):
            assert lock.exists()
            waiter = threading.Thread(target=second)
            waiter.start()
            time.sleep(0.8)
            order.append("first")
        waiter.join()
    assert order == ["first", "second"]
    assert f"waiting up to 10 s for another process building x (lock {lock})" in caplog.text
    assert not lock.exists()


def test_lock_times_out_with_one_line_naming_it(tmp_path):
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, 0, "building x"):
        t0 = time.monotonic()
        with pytest.raises(MultirecError) as err, exclusive_lock(lock, 0.3, "building x"):
            pass
        assert time.monotonic() - t0 >= 0.3
    assert str(err.value) == (
        f"gave up after 0.3 s waiting for lock {lock} (another process is building x); "
        "run again when it has finished"
    )


def test_lock_file_left_by_a_killed_holder_is_taken_at_once(tmp_path):
    lock = tmp_path / "x.lock"
    lock.touch()  # the kernel dropped the dead holder's lock; only the file remains
    with exclusive_lock(lock, 0, "building x"):
        pass
    assert not lock.exists()
