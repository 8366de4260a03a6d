"""Extraction end to end on a hand-made prepared dataset with tiny models loaded by path:
the cache's contents, reuse, refusal of wrong files, SIGKILL resumption, two processes,
disk errors, and the ``python -m multirec.extract`` entry point."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare
from multirec.errors import ArtefactMismatchError, MultirecError
from multirec.features import cache as cache_mod
from multirec.features.cache import (
    EMPTY_TEXT,
    MISSING,
    OK,
    UNDECODABLE,
    CorruptCacheError,
    load_features,
    lock_file,
)
from multirec.features.extraction import ensure_cache, instantiate_encoder
from multirec.io import exclusive_lock
from tests.conftest import compose_cfg
from tests.rawdata import write_raw
from tests.test_encoders import encode_images, encode_texts, save_tiny_bert, save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
CHUNK = 4


def prepared_dataset(root: Path, seed: int = 0) -> PreparedDataset:
    """18 items; after preparation one cover is deleted, one garbled, one item has no text."""
    raw = write_raw(root / "raw", n_users=30, n_items=18, per_user=8, seed=seed)
    info = raw / "item_info.csv"
    info.write_text(info.read_text().replace('"Title 3",tag0,"<b>desc</b> 3"', ",,"))
    cfg = DataConfig(name="t", root=str(raw))
    cfg.covers.min_side, cfg.covers.workers, cfg.tags.min_count, cfg.kcore = 16, 1, 1, 3
    ds = prepare(cfg, root / "prepared", progress=False)
    paths = ds.cover_paths()
    Path(paths[4]).unlink()
    Path(paths[6]).write_bytes(b"\xff\xd8 not really a jpeg")
    return ds


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> PreparedDataset:
    return prepared_dataset(tmp_path_factory.mktemp("extract"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"visual": save_tiny_clip(root / "clip"), "text": save_tiny_bert(root / "bert")}


def encoders(models: dict[str, Path], root: Path, *overrides: str):
    """The tiny encoders in float32, whose rows the tests compare with the model's own output;
    ``precision`` overrides test the lower ones."""
    cfg = compose_cfg(
        "extract",
        [
            "encoder=clip_bert",
            f"encoder.visual.path={models['visual']}",
            f"encoder.text.path={models['text']}",
            "encoder.visual.precision=float32",
            "encoder.text.precision=float32",
            *overrides,
        ],
        root,
    )
    return cfg.encoder


def build(ds, enc_cfg, cache_dir: Path, **kw) -> dict[str, Path]:
    return {
        side: ensure_cache(ds, enc_cfg[side], cache_dir, chunk_rows=CHUNK, progress=False, **kw)
        for side in ("visual", "text")
    }


@pytest.fixture(scope="module")
def reference(ds, models, tmp_path_factory):
    """One uninterrupted single-process build that other tests compare against."""
    root = tmp_path_factory.mktemp("reference")
    enc = encoders(models, root)
    return enc, build(ds, enc, root / "cache", num_workers=2)


def test_bfloat16_features_match_float32_ones_in_a_cache_of_their_own(
    ds, models, reference, caplog
):
    enc32, paths32 = reference
    enc16 = encoders(
        models,
        ds.root.parent,
        "encoder.visual.precision=bfloat16",
        "encoder.text.precision=bfloat16",
    )
    with caplog.at_level(logging.INFO, logger="multirec"):
        paths16 = build(ds, enc16, paths32["visual"].parent)
    for side in ("visual", "text"):
        # the precision is part of the identity: a float32 cache never serves bfloat16
        assert paths16[side] != paths32[side]
        (f32, ok32, _), (f16, ok16, attrs) = (
            load_features(paths32[side]),
            load_features(paths16[side]),
        )
        assert attrs["encoder"]["precision"] == "bfloat16"
        assert (ok32 == ok16).all()
        a, b = f32[ok32].astype(np.float64), f16[ok16].astype(np.float64)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.99 and not np.array_equal(a, b)
    assert caplog.text.count(" in bfloat16 into ") == 2


def test_every_item_is_encoded_and_unusable_ones_are_marked(ds, reference):
    enc_cfg, paths = reference
    no_text = int(np.flatnonzero(ds.item_ids == "i3")[0])
    for side, bad in (("visual", {4: MISSING, 6: UNDECODABLE}), ("text", {no_text: EMPTY_TEXT})):
        feats, valid, attrs = load_features(paths[side])
        assert feats.shape == (ds.n_items, 16) and feats.dtype == np.float16
        assert attrs["status_counts"][cache_mod.STATUS[OK]] == ds.n_items - len(bad)
        assert sorted(np.flatnonzero(~valid)) == sorted(bad)
        assert not feats[~valid].any()
        assert attrs["dataset_fingerprint"] == ds.fingerprint and attrs["n_items"] == ds.n_items
        assert paths[side].name.startswith(f"{side}-") and ds.fingerprint[:12] in paths[side].name
        # each row is the model's output for that very item
        encoder = instantiate_encoder(enc_cfg[side])
        rows = [i for i in (0, 1, 9, ds.n_items - 1) if i not in bad]
        if side == "visual":
            from PIL import Image

            want = encode_images(
                encoder, [Image.open(ds.cover_paths()[i]).convert("RGB") for i in rows]
            )
        else:
            want = encode_texts(encoder, [ds.texts()[i] for i in rows])
        np.testing.assert_allclose(
            feats[rows].astype(np.float32), want.numpy(), rtol=2e-3, atol=2e-3
        )


def test_second_call_is_a_cache_hit_without_loading_the_model(ds, reference, monkeypatch, caplog):
    enc_cfg, paths = reference
    mtimes = {p: p.stat().st_mtime_ns for p in paths.values()}
    from multirec.features.encoders.hf_image import HFImageEncoder
    from multirec.features.encoders.text import HFTextEncoder

    def no_model(self):
        raise AssertionError("the model was loaded for a cache hit")

    for cls in (HFImageEncoder, HFTextEncoder):
        monkeypatch.setattr(cls, "preprocessing", no_model)
        monkeypatch.setattr(cls, "network", no_model)
    with caplog.at_level(logging.INFO, logger="multirec"):
        again = build(ds, enc_cfg, paths["visual"].parent)
    assert again == paths
    assert {p: p.stat().st_mtime_ns for p in paths.values()} == mtimes
    assert sum(f"cache hit: {p}" in caplog.text for p in paths.values()) == 2


def test_none_side_gives_no_cache(ds, tmp_path):
    cfg = compose_cfg("extract", ["encoder=effnet_none"], tmp_path)
    assert ensure_cache(ds, cfg.encoder.text, tmp_path / "cache") is None
    assert not (tmp_path / "cache").exists()


def test_other_dataset_or_encoder_settings_get_their_own_cache(ds, models, reference, tmp_path):
    enc_cfg, paths = reference
    cache_dir = paths["text"].parent
    cls_cfg = encoders(models, tmp_path, "encoder.text.pooling=cls")
    cls_path = ensure_cache(ds, cls_cfg.text, cache_dir, chunk_rows=CHUNK, progress=False)
    assert cls_path != paths["text"]
    assert not np.array_equal(load_features(cls_path)[0], load_features(paths["text"])[0])
    other = prepared_dataset(tmp_path / "other", seed=1)
    assert other.fingerprint != ds.fingerprint
    other_path = ensure_cache(other, enc_cfg.text, cache_dir, chunk_rows=CHUNK, progress=False)
    assert other_path not in (paths["text"], cls_path)
    assert load_features(other_path)[2]["dataset_fingerprint"] == other.fingerprint


def test_wrong_or_corrupt_file_is_refused_then_rebuilt_on_request(ds, models, reference, tmp_path):
    enc_cfg, paths = reference
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    # A file under this encoder's name that holds another encoder's features.
    f32 = encoders(models, tmp_path, "encoder.text.dtype=float32")
    built = ensure_cache(ds, f32.text, cache_dir, chunk_rows=CHUNK, progress=False)
    shutil.copy(paths["text"], built)
    with pytest.raises(ArtefactMismatchError, match="refusing to reuse"):
        ensure_cache(ds, f32.text, cache_dir, chunk_rows=CHUNK, progress=False)
    rebuilt = ensure_cache(ds, f32.text, cache_dir, chunk_rows=CHUNK, progress=False, rebuild=True)
    feats, _, attrs = load_features(rebuilt)
    assert feats.dtype == np.float32 and attrs["dtype"] == "float32"
    # A truncated file.
    copy = cache_dir / paths["visual"].name
    data = paths["visual"].read_bytes()
    copy.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptCacheError) as err:
        ensure_cache(ds, enc_cfg.visual, cache_dir, chunk_rows=CHUNK, progress=False)
    assert str(copy) in str(err.value) and "rebuild=true" in str(err.value)
    ensure_cache(ds, enc_cfg.visual, cache_dir, chunk_rows=CHUNK, progress=False, rebuild=True)
    np.testing.assert_array_equal(load_features(copy)[0], load_features(paths["visual"])[0])


def test_rebuild_builds_a_valid_cache_anew_and_replaces_it_only_when_finished(
    ds, reference, tmp_path, monkeypatch
):
    enc_cfg, paths = reference
    final = tmp_path / paths["text"].name
    shutil.copy(paths["text"], final)
    old_inode = final.stat().st_ino
    seen_before_replace = []
    finish = cache_mod.ShardWriter.finish

    def checked_finish(self, target, attrs):
        # the old file is still whole under the final name while the new one is completed
        seen_before_replace.append(load_features(target)[2]["finished_at"])
        finish(self, target, attrs)

    monkeypatch.setattr(cache_mod.ShardWriter, "finish", checked_finish)
    again = ensure_cache(ds, enc_cfg.text, tmp_path, chunk_rows=CHUNK, progress=False, rebuild=True)
    assert again == final and len(seen_before_replace) == 1
    assert final.stat().st_ino != old_inode
    assert not list(tmp_path.glob("*.partial"))
    np.testing.assert_array_equal(load_features(final)[0], load_features(paths["text"])[0])


CHILD = """
import os, signal, sys
from pathlib import Path
from omegaconf import OmegaConf
from multirec.data.dataset import PreparedDataset
from multirec.features import cache
from multirec.features.distributed import init_distributed
from multirec.features.extraction import ensure_cache

mode, prepared, cfg_file, cache_dir = sys.argv[1:5]
if mode == "kill":
    commit = cache.ShardWriter.commit
    def dying_commit(self, row0, features, status, slot="encoder"):
        if self.rows_done >= 8:  # two chunks are recorded: scribble over the third, then die
            self.f["features"][self.rows_done:] = 7
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self, row0, features, status, slot)
    cache.ShardWriter.commit = dying_commit
else:
    init_distributed("cpu")
ds = PreparedDataset.load(prepared)
cfg = OmegaConf.load(cfg_file)
for side in ("visual", "text"):
    ensure_cache(ds, cfg[side], Path(cache_dir), chunk_rows=4, progress=False, num_workers=int(mode == "kill"))
"""


def child(
    mode: str, ds, enc_cfg, tmp_path: Path, cache_dir: Path, env: dict | None = None
) -> subprocess.Popen:
    cfg_file = tmp_path / "encoder.yaml"
    OmegaConf.save(enc_cfg, cfg_file)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(ds.root), str(cfg_file), str(cache_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_run_killed_with_sigkill_resumes_and_matches_uninterrupted_run(
    ds, reference, tmp_path, caplog
):
    enc_cfg, paths = reference
    cache_dir = tmp_path / "cache"
    proc = child("kill", ds, enc_cfg, tmp_path, cache_dir)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, out
    partial = cache_dir / (paths["visual"].name + ".partial")
    assert partial.exists() and not (cache_dir / paths["visual"].name).exists()
    with caplog.at_level(logging.INFO, logger="multirec"):
        resumed = build(ds, enc_cfg, cache_dir)
    assert f"resuming {partial} at item 8 of {ds.n_items}" in caplog.text
    assert not partial.exists()
    for side in ("visual", "text"):
        got, want = load_features(resumed[side]), load_features(paths[side])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_two_processes_store_the_same_features_as_one(ds, reference, tmp_path):
    enc_cfg, paths = reference
    cache_dir = tmp_path / "cache"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        child(
            "dist",
            ds,
            enc_cfg,
            tmp_path,
            cache_dir,
            {
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(x.name for x in cache_dir.iterdir()) == sorted(
        p.name for p in paths.values()
    )  # shards merged away
    for side in ("visual", "text"):
        got, want = load_features(cache_dir / paths[side].name), load_features(paths[side])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2]["world_size"] == 2


LOCK_CHILD = """
import logging, sys, time
from pathlib import Path
from omegaconf import OmegaConf
from multirec.data.dataset import PreparedDataset
from multirec.features import cache
from multirec.features.extraction import ensure_cache

prepared, cfg_file, cache_dir, pause = sys.argv[1:5]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
if pause:  # after its first chunk, say so and wait for the test's go-ahead
    commit = cache.ShardWriter.commit
    def paused(self, *a, **k):
        commit(self, *a, **k)
        Path(pause, "building").touch()
        deadline = time.monotonic() + 300
        while not Path(pause, "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    cache.ShardWriter.commit = paused
ensure_cache(PreparedDataset.load(prepared), OmegaConf.load(cfg_file), Path(cache_dir), chunk_rows=4, progress=False)
"""


def test_second_process_waits_for_the_first_build_and_reuses_it(ds, reference, tmp_path):
    enc_cfg, paths = reference
    cache_dir, cfg_file = tmp_path / "cache", tmp_path / "visual.yaml"
    OmegaConf.save(enc_cfg.visual, cfg_file)

    def start(pause: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", LOCK_CHILD, str(ds.root), str(cfg_file), str(cache_dir), pause],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = start(str(tmp_path))
    second = None
    try:
        while not (tmp_path / "building").exists():
            assert first.poll() is None, first.communicate()[0]
            time.sleep(0.05)
        second = start("")
        seen = []
        for line in second.stdout:  # until it says it waits (or ends)
            seen.append(line)
            if "waiting up to" in line:
                break
    finally:
        (tmp_path / "go").touch()
    outs = [first.communicate(timeout=300)[0], "".join(seen) + second.communicate(timeout=300)[0]]
    assert [first.returncode, second.returncode] == [0, 0], outs
    lock = cache_dir / (paths["visual"].name + ".lock")
    assert (
        f"waiting up to 7200 s for another process building {cache_dir / paths['visual'].name} (lock {lock})"
        in outs[1]
    )
    assert "".join(outs).count("extracting visual features") == 1
    assert "feature cache written" in outs[0] and "cache hit" in outs[1]
    assert [p.name for p in cache_dir.iterdir()] == [paths["visual"].name]  # no lock left
    np.testing.assert_array_equal(
        load_features(cache_dir / paths["visual"].name)[0], load_features(paths["visual"])[0]
    )


def test_waiting_for_a_build_gives_up_naming_the_lock(ds, reference, tmp_path):
    enc_cfg, paths = reference
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    lock = lock_file(cache_dir / paths["visual"].name)
    with exclusive_lock(lock, 0, "testing"), pytest.raises(MultirecError) as err:
        ensure_cache(ds, enc_cfg.visual, cache_dir, progress=False, lock_timeout_s=0.3)
    assert f"waiting for lock {lock}" in str(err.value) and "\n" not in str(err.value)
    assert not any(cache_dir.iterdir())


def test_unwritable_or_full_disk_fails_cleanly_and_leaves_nothing_finished(
    ds, reference, tmp_path, monkeypatch
):
    enc_cfg, paths = reference
    cache_dir = tmp_path / "cache"
    import multirec.features.cache as ex

    with monkeypatch.context() as m:
        m.setattr(ex.os, "access", lambda *a, **k: False)
        with pytest.raises(MultirecError, match="permission denied.*paths.cache_dir"):
            ensure_cache(ds, enc_cfg.visual, cache_dir, progress=False)
    with monkeypatch.context() as m:
        m.setattr(ex.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
        with pytest.raises(MultirecError, match="not enough space"):
            ensure_cache(ds, enc_cfg.visual, cache_dir, progress=False)
    assert not any(cache_dir.iterdir())
    # The disk fills up during the run: one-line error, the unfinished file resumes later.
    commit = cache_mod.ShardWriter.commit

    def full_after_one_chunk(self, *a, **k):
        if self.rows_done:
            raise OSError(errno.ENOSPC, "No space left on device")
        return commit(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(cache_mod.ShardWriter, "commit", full_after_one_chunk)
        with pytest.raises(MultirecError, match="no space left writing .*partial"):
            ensure_cache(ds, enc_cfg.visual, cache_dir, chunk_rows=CHUNK, progress=False)
    assert [p.suffix for p in cache_dir.iterdir()] == [".partial"]
    done = ensure_cache(ds, enc_cfg.visual, cache_dir, chunk_rows=CHUNK, progress=False)
    np.testing.assert_array_equal(load_features(done)[0], load_features(paths["visual"])[0])


def test_entry_point_builds_then_reuses(models, tmp_path):
    args = [
        sys.executable,
        "-m",
        "multirec.extract",
        "data=tiny",
        "encoder=clip_bert",
        f"encoder.visual.path={models['visual']}",
        f"encoder.text.path={models['text']}",
        f"paths.root_dir={tmp_path}",
        "num_workers=0",
        "progress=false",
    ]
    runs = [
        subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    printed = [
        dict(
            ln.split(maxsplit=1)
            for ln in r.stdout.splitlines()
            if ln.startswith(("visual ", "text "))
        )
        for r in runs
    ]
    assert printed[0] == printed[1] and set(printed[0]) == {"visual", "text"}
    for path in printed[0].values():
        assert Path(path).is_file() and Path(path).parent == tmp_path / "outputs" / "cache"
    run_dirs = list((tmp_path / "outputs" / "runs" / "extract").iterdir())
    assert len(run_dirs) >= 1
    recorded = json.loads((sorted(run_dirs)[-1] / "caches.json").read_text())
    assert {recorded["visual"], recorded["text"]} == set(printed[0].values())
    logs = [r.stdout + r.stderr for r in runs]
    assert logs[0].count("feature cache written") == 2 and logs[1].count("cache hit") == 2
