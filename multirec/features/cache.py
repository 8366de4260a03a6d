"""The HDF5 feature cache: encoder outputs for every item, computed once, read everywhere.

One file per (prepared dataset fingerprint, encoder fingerprint), both in its name and
its attributes::

    item_idx   int32  [n_items]          row i holds item i (checked on load)
    features   float16|float32 [n, dim]  contiguous, so readers can memory-map it;
                                          zeros where the item has no usable input
    valid      bool   [n_items]          the item's cover/text could be encoded
    status     uint8  [n_items]          why not: see STATUS
    checksums  uint32 [n_chunks]         CRC-32 of each chunk's features, status and valid
    attrs      format_version, dataset_fingerprint, encoder_fingerprint, encoder (JSON
               identity), model, modality, dim, dtype, n_items, chunk_rows, status_counts,
               library versions, preprocessing, device, created_at, finished_at, elapsed_s,
               rows_done (progress), complete

Crash safety. A cache is built under ``<name>.partial``; rows are written in chunks, and
after each chunk the progress attribute is updated in place and the file flushed, so a
run killed at any moment resumes from the last flushed chunk. Space is allocated when the
file is created, so a chunk write touches raw data only, never HDF5's structure. Only a
complete file is renamed to the final name (after fsync): a file under the final name is
finished, and its ``complete`` attribute says so again.

Integrity. Each chunk's checksum is computed from the rows in memory as they are written
and checked whenever a cache is opened for use, so bytes changed on disk afterwards (a
failing disk, a bad copy, an edit) are reported instead of silently becoming features.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from multirec.errors import ArtefactMismatchError, DataError, MultirecError

FORMAT_VERSION = 2
STATUS = ("ok", "missing_cover", "undecodable_cover", "empty_text")
OK, MISSING, UNDECODABLE, EMPTY_TEXT = range(len(STATUS))
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}
JSON_ATTRS = ("encoder", "status_counts", "versions", "preprocessing", "row_range")
REBUILD_HINT = "rerun `python -m multirec.extract` with rebuild=true (or delete the file)"


class CorruptCacheError(DataError):
    """A cache file that cannot be read or lacks what every cache has."""


def cache_file(cache_dir: Path, modality: str, name: str, dataset_fp: str, encoder_fp: str) -> Path:
    """Where the cache of (dataset, encoder) lives; both fingerprints are in the name."""
    return Path(cache_dir) / f"{modality}-{name}-{dataset_fp[:12]}-{encoder_fp[:12]}.h5"


def lock_file(final: Path) -> Path:
    """The lock a process holds while it builds the cache ``final``."""
    return final.with_name(final.name + ".lock")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _locked(message: str) -> bool:
    """HDF5's error when another process holds the file open for writing."""
    return "unable to lock file" in message.lower()


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open a cache file, turning HDF5's errors into one actionable line."""
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise DataError(
            f"feature cache {path} does not exist; run `python -m multirec.extract`"
        ) from None
    except (BlockingIOError, OSError) as exc:
        msg = _first_line(exc)
        if _locked(msg):
            raise MultirecError(
                f"{path} is open for writing in another process; wait for it to finish "
                "(or delete the file if no multirec process is running)"
            ) from None
        raise CorruptCacheError(
            f"{path} is not a readable feature cache ({msg}); {REBUILD_HINT}"
        ) from None


def read_attrs(f: h5py.File) -> dict:
    """A cache's attributes as plain Python values (JSON ones decoded)."""
    out: dict[str, Any] = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in JSON_ATTRS:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def check_structure(f: h5py.File, path: Path) -> dict:
    """Attributes of ``f`` after checking that it has a cache's datasets and shapes."""
    try:
        attrs = read_attrs(f)
        n, dim, chunk_rows = len(f["item_idx"]), int(attrs["dim"]), int(attrs["chunk_rows"])
        shapes_ok = (
            attrs["format_version"] == FORMAT_VERSION
            and f["features"].shape == (n, dim)
            and f["valid"].shape == (n,)
            and f["status"].shape == (n,)
            and chunk_rows > 0
            and f["checksums"].shape == (-(-n // chunk_rows),)
        )
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise CorruptCacheError(
            f"{path} is not a complete feature cache ({_first_line(exc)}); {REBUILD_HINT}"
        ) from None
    if not shapes_ok:
        raise CorruptCacheError(
            f"{path} has inconsistent dataset shapes or an old format; {REBUILD_HINT}"
        )
    return attrs


def block_checksum(features: np.ndarray, status: np.ndarray, valid: np.ndarray) -> int:
    """CRC-32 of a block of rows as stored (features in the stored dtype)."""
    crc = 0
    for part in (features, status, valid):
        crc = zlib.crc32(np.ascontiguousarray(part), crc)
    return crc


def verify_checksums(f: h5py.File, path: Path, arrays: dict | None = None) -> None:
    """Check every written chunk of ``f`` against its stored checksum.

    ``arrays`` may hold ``features``, ``status`` and ``valid`` already read whole, so
    the data checked is the very data handed on; the rest is read chunk by chunk.
    """
    try:
        attrs = read_attrs(f)
        chunk, done = int(attrs["chunk_rows"]), int(attrs["rows_done"])
        start = int(attrs["row_range"][0])
        sums = f["checksums"][()]
        src = {name: f[name] for name in ("features", "status", "valid")} | (arrays or {})
        for i, a in enumerate(range(0, done, chunk)):
            b = min(a + chunk, done)
            rows = (src["features"][a:b], src["status"][a:b], src["valid"][a:b])
            if block_checksum(*rows) != sums[i]:
                raise CorruptCacheError(
                    f"{path}: the features of items {start + a}..{start + b - 1} do not match "
                    f"their checksum, so the file changed after it was written; {REBUILD_HINT}"
                )
    except (KeyError, ValueError, TypeError, IndexError, OSError) as exc:
        raise CorruptCacheError(
            f"{path} is not a readable feature cache ({_first_line(exc)}); {REBUILD_HINT}"
        ) from None


def check_finished(path: Path, dataset_fp: str, encoder_fp: str, n_items: int) -> dict:
    """Attributes of the finished cache at ``path``; raise if it is not the one asked for
    or if its contents changed since it was written."""
    with open_h5(path) as f:
        attrs = check_structure(f, path)
        verify_checksums(f, path)
    if not attrs.get("complete"):
        raise CorruptCacheError(
            f"{path} is marked unfinished but has a finished cache's name; {REBUILD_HINT}"
        )
    theirs = (
        attrs.get("dataset_fingerprint"),
        attrs.get("encoder_fingerprint"),
        attrs.get("n_items"),
    )
    if theirs != (dataset_fp, encoder_fp, n_items):
        raise ArtefactMismatchError(
            f"{path} holds features of dataset {str(theirs[0])[:12]} / encoder {str(theirs[1])[:12]} "
            f"({theirs[2]} items), not of dataset {dataset_fp[:12]} / encoder {encoder_fp[:12]} "
            f"({n_items} items); refusing to reuse it ({REBUILD_HINT})"
        )
    return attrs


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now, so a full disk fails at once, not hours later."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


class ShardWriter:
    """Writes rows ``[start, stop)`` of a cache into one file, chunk by chunk, resumably.

    A single-process build writes all rows into ``<final>.partial``; under
    torch.distributed each rank writes its own slice into its own file, merged at the end.
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self.f = f
        self.start, self.stop = (int(x) for x in json.loads(f.attrs["row_range"]))
        self.chunk_rows = int(f.attrs["chunk_rows"])
        self.dtype = f["features"].dtype

    @property
    def rows_done(self) -> int:
        return int(self.f.attrs["rows_done"])

    @classmethod
    def open(
        cls, path: Path, start: int, stop: int, dim: int, dtype: str, attrs: dict
    ) -> ShardWriter:
        """Resume ``path`` if it is an unfinished shard of the same build, else start it over.

        ``attrs`` must hold the identity keys (fingerprints, encoder); any difference in
        those, the row range, ``dim``, ``dtype`` or ``chunk_rows`` starts over.
        """
        path = Path(path)
        want = {
            **{k: attrs[k] for k in ("dataset_fingerprint", "encoder_fingerprint", "chunk_rows")},
            "row_range": [start, stop],
            "dim": dim,
            "dtype": dtype,
        }
        if path.exists():
            try:
                f = h5py.File(path, "r+")
            except OSError as exc:
                if _locked(_first_line(exc)):
                    raise MultirecError(
                        f"{path} is being built by another process; wait for it to finish "
                        "(or delete the file if no multirec process is running)"
                    ) from None
                f = None  # unreadable leftover of a killed run: start over
            if f is not None:
                try:
                    have = check_structure(f, path)
                    if all(have.get(k) == v for k, v in want.items()):
                        return cls(path, f)
                except CorruptCacheError:
                    pass
                f.close()
            path.unlink()
        return cls(path, cls._create(path, start, stop, dim, dtype, {**attrs, **want}))

    @staticmethod
    def _create(path: Path, start: int, stop: int, dim: int, dtype: str, attrs: dict) -> h5py.File:
        n = stop - start
        f = h5py.File(path, "w")
        try:
            f.create_dataset("item_idx", data=np.arange(start, stop, dtype=np.int32))
            for name, shape, dt in (
                ("features", (n, dim), STORAGE_DTYPES[dtype]),
                ("valid", (n,), np.bool_),
                ("status", (n,), np.uint8),
                ("checksums", (-(-n // attrs["chunk_rows"]),), np.uint32),
            ):
                # Contiguous and allocated now: chunk writes later touch raw bytes only.
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                f.create_dataset(name, shape=shape, dtype=dt, dcpl=dcpl)
            for key, value in attrs.items():
                f.attrs[key] = (
                    json.dumps(value, sort_keys=True, default=str) if key in JSON_ATTRS else value
                )
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["n_items"] = attrs["n_items"]
            f.attrs["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            f.attrs["rows_done"] = np.int64(0)
            f.attrs["complete"] = np.int64(0)
            f.flush()
            _reserve(path)
        except BaseException:
            f.close()
            raise
        return f

    def commit(
        self, row0: int, features: np.ndarray, status: np.ndarray, slot: str = "encoder"
    ) -> None:
        """Write the next chunk of rows (``row0`` is a global item index) and record it."""
        a = row0 - self.start
        if a != self.rows_done:
            raise RuntimeError(
                f"{self.path}: block at row {row0} does not follow row {self.start + self.rows_done}"
            )
        if len(features) != min(self.chunk_rows, self.stop - row0):
            raise RuntimeError(
                f"{self.path}: block at row {row0} has {len(features)} rows, not one chunk"
            )
        with np.errstate(over="ignore"):
            stored = features.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise DataError(
                f"features of items {row0}..{row0 + len(features) - 1} are not finite as {self.dtype} "
                f"(overflow or a broken model); set {slot}.dtype=float32 or check the weights"
            )
        b = a + len(features)
        status = np.asarray(status, dtype=np.uint8)
        valid = status == OK
        self.f["features"][a:b] = stored
        self.f["status"][a:b] = status
        self.f["valid"][a:b] = valid
        self.f["checksums"][a // self.chunk_rows] = block_checksum(stored, status, valid)
        self.f.attrs.modify("rows_done", np.int64(b))
        self.f.flush()

    def finish(self, final: Path, attrs: dict) -> None:
        """Record the summary, mark complete, and move the file to its final name."""
        if self.rows_done != self.stop - self.start:
            raise RuntimeError(
                f"{self.path}: finishing with {self.rows_done} of {self.stop - self.start} rows"
            )
        counts = np.bincount(self.f["status"][()], minlength=len(STATUS))
        summary = {
            **attrs,
            "status_counts": {name: int(c) for name, c in zip(STATUS, counts, strict=True)},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for key, value in summary.items():
            self.f.attrs[key] = (
                json.dumps(value, sort_keys=True, default=str) if key in JSON_ATTRS else value
            )
        self.f.attrs.modify("complete", np.int64(1))
        self.close()
        _fsync(self.path)
        os.replace(self.path, final)
        _fsync(final.parent)

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a finished cache whole: ``(features [n_items, dim], valid [n_items], attrs)``.

    Rows are in ``item_idx`` order; items without a usable input have ``valid`` False
    and all-zero features. The dtype is the stored one (float16 or float32).
    """
    path = Path(path)
    with open_h5(path) as f:
        attrs = check_structure(f, path)
        if not attrs.get("complete"):
            raise CorruptCacheError(f"{path} is unfinished; {REBUILD_HINT}")
        n = attrs["n_items"]
        if len(f["item_idx"]) != n or not np.array_equal(f["item_idx"][()], np.arange(n)):
            raise CorruptCacheError(f"{path}: item_idx is not 0..{n - 1}; {REBUILD_HINT}")
        dset = f["features"]
        features = np.empty(dset.shape, dtype=dset.dtype)
        if features.size:
            dset.read_direct(features)
        valid, status = f["valid"][()], f["status"][()]
        verify_checksums(f, path, {"features": features, "status": status, "valid": valid})
    return features, valid, attrs


class FeatureReader:
    """Random access to a finished cache without loading it into memory.

    Picklable: it holds the path and a few numbers. Each process (DataLoader worker)
    maps the file itself on first use -- HDF5 handles do not survive ``fork`` -- and the
    operating system shares the pages between workers. ``reader[idx]`` returns float32
    rows for an array of item indices.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open_h5(self.path) as f:
            attrs = check_structure(f, self.path)
            if not attrs.get("complete"):
                raise CorruptCacheError(f"{self.path} is unfinished; {REBUILD_HINT}")
            dset = f["features"]
            offset = dset.id.get_offset()
            if dset.chunks is not None or offset is None:
                raise CorruptCacheError(
                    f"{self.path}: features are not stored contiguously; {REBUILD_HINT}"
                )
            self.offset, self.shape, self.dtype = int(offset), dset.shape, dset.dtype
            self.valid = f["valid"][()]
            verify_checksums(f, self.path, {"valid": self.valid})
        self.attrs = attrs
        self._map: np.memmap | None = None
        self._pid = -1

    @property
    def features(self) -> np.ndarray:
        if self._map is None or self._pid != os.getpid():
            self._map = np.memmap(
                self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape
            )
            self._pid = os.getpid()
        return self._map

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: np.ndarray | int) -> np.ndarray:
        return np.asarray(self.features[idx], dtype=np.float32)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_pid": -1}


def check_writable(cache_dir: Path) -> None:
    """Fail before any model work when the cache directory cannot be written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MultirecError(
            f"cannot create feature cache directory {cache_dir} ({exc.strerror}); set paths.cache_dir"
        ) from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise MultirecError(
            f"cannot write to feature cache directory {cache_dir} (permission denied); set paths.cache_dir"
        )


def check_space(cache_dir: Path, need_bytes: int, partial: Path) -> None:
    """Fail before encoding anything when the finished file would not fit."""
    have = partial.stat().st_blocks * 512 if partial.exists() else 0
    free = shutil.disk_usage(cache_dir).free
    if free < need_bytes - have:
        raise MultirecError(
            f"not enough space in {cache_dir} for {partial.name.removesuffix('.partial')}: needs "
            f"{(need_bytes - have) / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free; free space or set paths.cache_dir"
        )


@contextlib.contextmanager
def disk_errors(path: Path):
    """Out-of-space and permission failures while writing, as one line (the partial file resumes)."""
    try:
        yield
    except OSError as exc:
        text = str(exc)
        if (
            exc.errno in (errno.ENOSPC, errno.EDQUOT)
            or "No space left" in text
            or "quota" in text.lower()
        ):
            raise MultirecError(
                f"no space left writing {path}; free space (the unfinished file resumes) or set paths.cache_dir"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in text:
            raise MultirecError(
                f"cannot write {path} (permission denied); set paths.cache_dir"
            ) from None
        raise
