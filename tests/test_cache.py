"""The HDF5 cache format: writing in chunks, resuming, refusing bad files, reading."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from multirec.errors import ArtefactMismatchError, DataError
from multirec.features.cache import (
    MISSING,
    OK,
    UNDECODABLE,
    CorruptCacheError,
    FeatureReader,
    ShardWriter,
    cache_file,
    check_finished,
    load_features,
)

N, DIM, CHUNK = 10, 6, 4
ATTRS = {
    "dataset_fingerprint": "d" * 64,
    "encoder_fingerprint": "e" * 64,
    "chunk_rows": CHUNK,
    "n_items": N,
    "encoder": {"model": "m"},
    "model": "m",
    "modality": "visual",
}


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((N, DIM)).astype(np.float32)
    status = np.full(N, OK, dtype=np.uint8)
    status[[2, 7]] = MISSING, UNDECODABLE
    feats[status != OK] = 0
    return feats, status


def write(
    final: Path,
    feats: np.ndarray,
    status: np.ndarray,
    dtype: str = "float16",
    stop_after: int | None = None,
):
    w = ShardWriter.open(final.with_name(final.name + ".partial"), 0, N, DIM, dtype, ATTRS)
    for i, a in enumerate(range(w.rows_done, N, CHUNK)):
        if stop_after is not None and i == stop_after:
            w.close()
            return w
        w.commit(a, feats[a : a + CHUNK], status[a : a + CHUNK])
    w.finish(final, {"elapsed_s": 1.0})
    return w


@pytest.fixture
def final(tmp_path):
    return cache_file(tmp_path, "visual", "m", "d" * 64, "e" * 64)


def test_name_carries_both_fingerprints(tmp_path):
    p = cache_file(tmp_path, "text", "all-MiniLM-L6-v2", "a" * 64, "b" * 64)
    assert p.name == f"text-all-MiniLM-L6-v2-{'a' * 12}-{'b' * 12}.h5"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_roundtrip_layout_and_attributes(final, dtype):
    feats, status = data()
    write(final, feats, status, dtype)
    assert not final.with_name(final.name + ".partial").exists()
    got, valid, attrs = load_features(final)
    assert got.dtype == np.dtype(dtype) and got.shape == (N, DIM)
    np.testing.assert_allclose(got, feats, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(valid, status == OK)
    assert not got[~valid].any()
    assert attrs["status_counts"] == {
        "ok": 8,
        "missing_cover": 1,
        "undecodable_cover": 1,
        "empty_text": 0,
    }
    assert attrs["complete"] == 1 and attrs["rows_done"] == N and attrs["dim"] == DIM
    assert attrs["encoder"] == {"model": "m"} and attrs["dataset_fingerprint"] == "d" * 64
    with h5py.File(final) as f:
        assert f["features"].chunks is None  # contiguous: memory-mappable
        np.testing.assert_array_equal(f["item_idx"][()], np.arange(N))
    assert check_finished(final, "d" * 64, "e" * 64, N)["n_items"] == N


def test_unfinished_file_resumes_and_ends_identical(final, tmp_path):
    feats, status = data()
    write(final, feats, status, stop_after=1)
    partial = final.with_name(final.name + ".partial")
    assert partial.exists() and not final.exists()
    with h5py.File(partial) as f:
        assert f.attrs["rows_done"] == CHUNK and f.attrs["complete"] == 0
    w = write(final, feats, status)
    assert w.start == 0
    other = cache_file(tmp_path / "b", "visual", "m", "d" * 64, "e" * 64)
    other.parent.mkdir()
    write(other, feats, status)
    np.testing.assert_array_equal(load_features(final)[0], load_features(other)[0])


def test_partial_of_another_build_starts_over(final):
    feats, status = data()
    write(final, feats, status, stop_after=2)
    partial = final.with_name(final.name + ".partial")
    w = ShardWriter.open(partial, 0, N, DIM, "float32", ATTRS)  # other dtype: not this build's file
    assert w.rows_done == 0
    w.close()
    partial.write_bytes(b"garbage left by a crash")
    w = ShardWriter.open(partial, 0, N, DIM, "float16", ATTRS)
    assert w.rows_done == 0
    w.close()


def test_float16_overflow_is_an_error_suggesting_float32(final):
    feats, status = data()
    feats[0, 0] = 1e6
    with pytest.raises(DataError, match="dtype=float32"):
        write(final, feats, status)
    assert not final.exists()


def test_truncated_or_garbled_file_is_refused_naming_file_and_rebuild(final):
    feats, status = data()
    write(final, feats, status)
    good = final.read_bytes()
    final.write_bytes(good[: len(good) // 2])
    for check in (
        lambda: load_features(final),
        lambda: check_finished(final, "d" * 64, "e" * 64, N),
    ):
        with pytest.raises(CorruptCacheError) as err:
            check()
        assert (
            str(final) in str(err.value)
            and "rebuild=true" in str(err.value)
            and "\n" not in str(err.value)
        )
    final.write_bytes(b"\0" * 64 + good[64:])
    with pytest.raises(CorruptCacheError, match="rebuild=true"):
        load_features(final)


def test_file_without_cache_datasets_is_corrupt(final):
    with h5py.File(final, "w") as f:
        f.create_dataset("something", data=np.arange(3))
    with pytest.raises(CorruptCacheError, match="not a complete feature cache"):
        load_features(final)


def test_cache_of_other_inputs_is_a_mismatch(final):
    feats, status = data()
    write(final, feats, status)
    with pytest.raises(ArtefactMismatchError, match="refusing to reuse"):
        check_finished(final, "x" * 64, "e" * 64, N)
    with pytest.raises(ArtefactMismatchError):
        check_finished(final, "d" * 64, "y" * 64, N)
    with pytest.raises(ArtefactMismatchError):
        check_finished(final, "d" * 64, "e" * 64, N + 1)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, reader: FeatureReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.reader[i]


def test_lazy_reader_is_picklable_and_works_in_forked_workers(final):
    feats, status = data()
    write(final, feats, status)
    whole = load_features(final)[0].astype(np.float32)
    reader = FeatureReader(final)
    np.testing.assert_array_equal(
        reader[np.array([5, 1, 5])], whole[[5, 1, 5]]
    )  # opened in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._map is None
    np.testing.assert_array_equal(clone.valid, status == OK)
    rows = torch.cat(list(DataLoader(_Rows(reader), batch_size=3, num_workers=2)))
    np.testing.assert_array_equal(rows.numpy(), whole)


def _flip_byte(path: Path, dataset: str, row: int) -> None:
    """Invert one byte of ``dataset``'s row ``row`` in the file, behind HDF5's back."""
    with h5py.File(path) as f:
        dset = f[dataset]
        offset = dset.id.get_offset() + row * (dset.size // len(dset)) * dset.dtype.itemsize
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(("dataset", "row"), [("features", 5), ("status", 9), ("valid", 0)])
def test_changed_bytes_are_refused_on_every_open(final, dataset, row):
    feats, status = data()
    write(final, feats, status)
    _flip_byte(final, dataset, row)
    first = row - row % CHUNK
    for check in (
        lambda: load_features(final),
        lambda: FeatureReader(final),
        lambda: check_finished(final, "d" * 64, "e" * 64, N),
    ):
        with pytest.raises(CorruptCacheError) as err:
            check()
        msg = str(err.value)
        assert str(final) in msg and "\n" not in msg
        assert f"items {first}..{min(first + CHUNK, N) - 1} do not match their checksum" in msg
        assert "rebuild=true" in msg and "delete the file" in msg


def test_cache_without_checksums_is_an_old_format(final):
    feats, status = data()
    write(final, feats, status)
    with h5py.File(final, "r+") as f:
        del f["checksums"]
        f.attrs["format_version"] = 1
    with pytest.raises(CorruptCacheError, match="old format.*rebuild=true"):
        load_features(final)


def test_blocks_must_be_whole_chunks(final):
    feats, status = data()
    w = ShardWriter.open(final.with_name(final.name + ".partial"), 0, N, DIM, "float16", ATTRS)
    with pytest.raises(RuntimeError, match="not one chunk"):
        w.commit(0, feats[:3], status[:3])
    w.close()
