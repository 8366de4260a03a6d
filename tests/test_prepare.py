"""Preparation: properties of the output, determinism, and every bad input named by the issue."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
from PIL import Image

from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare
from multirec.errors import ConfigError, DataError, MultirecError
from tests.rawdata import jpeg_bytes, write_raw

REPO = Path(__file__).resolve().parents[1]


def cfg_for(root: Path, reader: dict | None = None, **kw) -> DataConfig:
    """A config for ``root``: ``reader`` updates the PixelRec reader's settings, ``kw`` the rest."""
    cfg = DataConfig(name="t", root=str(root))
    cfg.reader.update(reader or {})
    cfg.covers.min_side = 16
    cfg.covers.workers = 1
    cfg.tags.min_count = 1
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run(root: Path, tmp: Path, reader: dict | None = None, **kw) -> PreparedDataset:
    return prepare(cfg_for(root, reader, **kw), tmp / "prepared", progress=False)


@pytest.fixture
def raw(tmp_path):
    return write_raw(tmp_path / "raw")


def all_interactions(ds: PreparedDataset) -> pl.DataFrame:
    return pl.concat(
        [
            pl.read_parquet(ds.root / f"{s}.parquet").with_columns(pl.lit(s).alias("split"))
            for s in ("train", "valid", "test")
        ]
    )


@pytest.mark.parametrize("strategy", ["random", "leave_one_out", "temporal"])
def test_split_properties(raw, tmp_path, strategy):
    cfg = cfg_for(raw, kcore=3)
    cfg.split.strategy = strategy
    ds = prepare(cfg, tmp_path / "p", progress=False)
    df = all_interactions(ds)
    # disjoint, and together they are every kept interaction (no pair twice)
    assert df.select("user_idx", "item_idx").is_unique().all()
    assert df.height == sum(ds.manifest["split_sizes"].values())
    train_users = set(ds.train.users.tolist())
    assert set(ds.test.users.tolist()) <= train_users
    assert set(ds.valid.users.tolist()) <= train_users
    assert len(ds.test) > 0 and len(ds.valid) > 0
    if strategy == "random":  # about 70/15/15
        assert 0.6 < len(ds.train) / df.height < 0.8


def test_random_split_shares_per_user(raw, tmp_path):
    ds = run(raw, tmp_path)
    # 8 interactions per user: round(1.2)=1 test, 1 valid, 6 train for every user
    assert np.all(np.bincount(ds.test.users, minlength=ds.n_users) == 1)
    assert np.all(np.bincount(ds.train.users, minlength=ds.n_users) == 6)


def test_kcore_iterates_until_stable(tmp_path):
    root = tmp_path / "raw"
    write_raw(root, n_users=12, n_items=10, per_user=6)
    # a chain: u100 has 5 items but one of them (i99) is only seen by u100 and u101 ...
    extra = ["i99,u100,1", "i1,u100,2", "i2,u100,3", "i3,u100,4", "i4,u100,5", "i99,u101,6"]
    with open(root / "interactions.csv", "a") as f:
        f.write("\n".join(extra) + "\n")
    with open(root / "item_info.csv", "a") as f:
        f.write('i99,1,1,1,1,1,1,1,"t","g","d"\n')
    (root / "covers" / "i99.jpg").write_bytes(jpeg_bytes(99))
    ds = run(root, tmp_path, kcore=5)
    df = all_interactions(ds)
    assert df.group_by("user_idx").len()["len"].min() >= 5
    assert df.group_by("item_idx").len()["len"].min() >= 5
    # i99 has 2 interactions; removing it leaves u100 with 4 < 5, so u100 goes too
    assert "i99" not in set(ds.item_ids) and "u100" not in set(ds.user_ids)


def test_same_inputs_byte_identical_and_noop(raw, tmp_path):
    a = run(raw, tmp_path / "a")
    b = run(raw, tmp_path / "b")
    for name in (
        "manifest.json",
        "users.parquet",
        "items.parquet",
        "train.parquet",
        "valid.parquet",
        "test.parquet",
    ):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    mtime = (a.root / "manifest.json").stat().st_mtime_ns
    again = run(raw, tmp_path / "a")
    assert again.root == a.root and (a.root / "manifest.json").stat().st_mtime_ns == mtime


def test_brackets_in_paths_are_names_not_patterns(tmp_path):
    """A folder named like a sweep's value ("x-[0.3,0.35]") reads as itself, raw and
    prepared: polars would otherwise expand it as a glob and find nothing."""
    plain = run(write_raw(tmp_path / "raw"), tmp_path / "plain")
    odd = tmp_path / "x-[0.3,0.35]"
    ds = run(write_raw(odd / "raw"), odd)
    assert len(ds.train) == len(plain.train) > 0
    assert (ds.item_ids == plain.item_ids).all()


def test_changed_settings_or_inputs_new_fingerprint(raw, tmp_path):
    base = run(raw, tmp_path)
    other_seed = cfg_for(raw)
    other_seed.split.seed = 7
    assert (
        prepare(other_seed, tmp_path / "prepared", progress=False).fingerprint != base.fingerprint
    )
    with open(raw / "interactions.csv", "a") as f:
        f.write("i0,u999,5\n")
    changed = run(raw, tmp_path)
    assert changed.fingerprint != base.fingerprint and base.root.exists()


def test_tags_and_numerics_fitted_on_train_only(raw, tmp_path):
    ds = run(raw, tmp_path)
    num = ds.numeric_features()
    train_rows = num[ds.train.items]
    assert np.allclose(train_rows.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(train_rows.std(axis=0), 1, atol=1e-3)
    assert ds.tag_index().min() >= 0 and ds.tag_index().max() < ds.n_tags


def test_text_cleaned_and_title_kept(raw, tmp_path):
    ds = run(raw, tmp_path)
    texts = ds.texts()
    assert all("<b>" not in t for t in texts)
    assert texts[0].startswith("Title ")


# --- bad input ---------------------------------------------------------------------


def test_missing_file(raw, tmp_path):
    (raw / "item_info.csv").unlink()
    with pytest.raises(DataError, match="item_info.csv not found"):
        run(raw, tmp_path)


def test_empty_file(raw, tmp_path):
    (raw / "interactions.csv").write_text("")
    with pytest.raises(DataError, match="interactions.csv is empty"):
        run(raw, tmp_path)


def test_header_only_file(raw, tmp_path):
    (raw / "interactions.csv").write_text("item_id,user_id,timestamp\n")
    with pytest.raises(DataError, match="no rows"):
        run(raw, tmp_path)


def test_renamed_column_named_with_hint(raw, tmp_path):
    p = raw / "interactions.csv"
    p.write_text(p.read_text().replace("user_id", "userid", 1))
    with pytest.raises(DataError, match=r"'user_id'.*data.reader.columns.user_id=userid"):
        run(raw, tmp_path)


def test_extra_column_ignored_and_counted(raw, tmp_path):
    p = raw / "interactions.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",extra"] + [ln + ",x" for ln in lines[1:]]) + "\n")
    ds = run(raw, tmp_path)
    assert ds.manifest["counts"]["extra_interaction_columns"] == 1


def test_missing_description_column_is_tolerated(raw, tmp_path):
    df = pl.read_csv(raw / "item_info.csv").drop("description")
    df.write_csv(raw / "item_info.csv")
    ds = run(raw, tmp_path)
    assert ds.manifest["counts"]["description_column_absent"] == 1


def test_non_integer_timestamp_names_line(raw, tmp_path):
    p = raw / "interactions.csv"
    lines = p.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",yesterday"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4: timestamp 'yesterday' is not an integer"):
        run(raw, tmp_path)


def test_duplicates_dropped_and_counted_or_refused(raw, tmp_path):
    p = raw / "interactions.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + lines[1:3]) + "\n")
    ds = run(raw, tmp_path)
    assert ds.manifest["counts"]["duplicate_interactions"] == 2
    with pytest.raises(DataError, match="more than once.*data.duplicates=drop"):
        run(raw, tmp_path, duplicates="error")


def test_unknown_items_dropped_and_counted(raw, tmp_path):
    with open(raw / "interactions.csv", "a") as f:
        f.write("i_ghost,u0,1\ni_ghost,u1,2\n")
    ds = run(raw, tmp_path)
    assert ds.manifest["counts"]["interactions_unknown_item"] == 2


def test_everything_removed_by_kcore(raw, tmp_path):
    with pytest.raises(DataError, match="removed every interaction.*lower data.kcore"):
        run(raw, tmp_path, kcore=50)


def test_non_utf8_text_names_line(raw, tmp_path):
    p = raw / "item_info.csv"
    data = p.read_bytes().splitlines()
    data[2] = data[2].replace(b"Title 1", "标题".encode("gb18030"))
    p.write_bytes(b"\n".join(data) + b"\n")
    with pytest.raises(DataError, match=r"item_info.csv line 3 is not UTF-8"):
        run(raw, tmp_path)


def _png(mode: str, size: int = 48) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size, size)).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_cover_problems_counted_and_policy(raw, tmp_path):
    covers = raw / "covers"
    (covers / "i0.jpg").unlink()  # missing
    (covers / "i1.jpg").write_bytes(b"not an image at all")  # corrupt
    good = (covers / "i2.jpg").read_bytes()
    (covers / "i2.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (covers / "i3.jpg").write_bytes(jpeg_bytes(3, size=4))  # too small
    (covers / "i4.jpg").write_bytes(jpeg_bytes(4, mode="L"))  # grayscale, fine
    (covers / "i5.jpg").write_bytes(jpeg_bytes(5, mode="CMYK"))
    (covers / "i6.jpg").unlink()
    (covers / "i6.png").write_bytes(_png("RGBA"))
    (covers / "i7.jpg").unlink()
    (covers / "i7.png").write_bytes(_png("I;16"))
    (covers / "i8.jpg").unlink()
    (covers / "i8.png").write_bytes(_png("P"))
    (covers / "i9.jpg").write_bytes(jpeg_bytes(9, size=64))
    ds = run(raw, tmp_path, kcore=1)
    c = ds.manifest["counts"]
    assert c["cover_missing"] == 1 and c["cover_corrupt"] == 1 and c["cover_truncated"] == 1
    assert c["cover_too_small"] == 1
    assert c["cover_converted_grayscale"] == 1 and c["cover_converted_cmyk"] == 1
    assert c["cover_converted_rgba"] == 1 and c["cover_converted_16bit"] == 1
    assert c["cover_converted_palette"] == 1
    assert c["items_dropped_invalid_cover"] == 4
    assert not {"i0", "i1", "i2", "i3"} & set(ds.item_ids)
    cfg = cfg_for(raw, kcore=1)
    cfg.covers.policy = "keep"
    kept = prepare(cfg, tmp_path / "keep", progress=False)
    flags = dict(zip(kept.item_ids, kept.items["cover_ok"].to_list(), strict=True))
    assert flags["i0"] is False and flags["i4"] is True


def test_decompression_bomb_refused(raw, tmp_path):
    (raw / "covers" / "i0.jpg").write_bytes(jpeg_bytes(0, size=64))
    cfg = cfg_for(raw, kcore=1)
    cfg.covers.max_pixels = 50 * 50  # the 64x64 cover counts as a bomb, the 48x48 ones do not
    ds = prepare(cfg, tmp_path / "p", progress=False)
    assert ds.manifest["counts"]["cover_bomb"] == 1 and "i0" not in set(ds.item_ids)
    cfg.covers.max_pixels = 10
    with pytest.raises(DataError, match="no item .* has a usable cover.*cover_bomb"):
        prepare(cfg, tmp_path / "p", progress=False)


def test_foreign_output_directory_refused(raw, tmp_path):
    cfg = cfg_for(raw)
    from multirec.data.prepare import dataset_fingerprint
    from multirec.data.readers import build_reader

    fp, _ = dataset_fingerprint(cfg, build_reader(cfg.reader))
    target = tmp_path / "prepared" / f"t-{fp[:12]}"
    target.mkdir(parents=True)
    (target / "precious.txt").write_text("mine")
    with pytest.raises(Exception, match="did not create"):
        run(raw, tmp_path)
    assert (target / "precious.txt").read_text() == "mine"


def test_bad_settings(raw, tmp_path):
    with pytest.raises(ConfigError, match="policy"):
        cfg = cfg_for(raw)
        cfg.covers.policy = "maybe"
        prepare(cfg, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown field"):
        cfg = cfg_for(raw)
        cfg.text.template = "{title} {summary}"
        prepare(cfg, tmp_path, progress=False)


def test_manifest_is_json_with_counts(raw, tmp_path):
    ds = run(raw, tmp_path)
    m = json.loads((ds.root / "manifest.json").read_text())
    assert m["n_users"] == ds.n_users and "counts" in m and m["fingerprint"] == ds.fingerprint


def test_data_without_count_columns(raw, tmp_path):
    cfg = cfg_for(raw)
    cfg.reader["columns"]["counts"] = []
    ds = prepare(cfg, tmp_path / "p", progress=False)
    assert ds.numeric_features().shape == (ds.n_items, 0)


def test_non_finite_and_negative_counts_are_missing_and_counted(raw, tmp_path):
    p = raw / "item_info.csv"
    lines = p.read_text().splitlines()
    for i, bad in ((1, "inf"), (2, "nan"), (3, "-inf"), (4, "-5")):
        item, _, rest = lines[i].split(",", 2)
        lines[i] = f"{item},{bad},{rest}"  # the first count column (view_number)
    p.write_text("\n".join(lines) + "\n")
    ds = run(raw, tmp_path)
    c = ds.manifest["counts"]
    assert c["non_finite_count_values"] == 3 and c["negative_count_values"] == 1
    num = ds.numeric_features()
    assert np.isfinite(num).all() and np.isfinite(ds.manifest["numeric_stats"]["mean"]).all()
    bad_rows = [ds.item_ids.tolist().index(f"i{i}") for i in range(4)]
    assert not num[bad_rows, 0].any()  # missing -> the training mean, 0 after scaling


def _set_timestamps(root: Path, fn) -> None:
    p = root / "interactions.csv"
    lines = p.read_text().splitlines()
    rows = [ln.rsplit(",", 1) for ln in lines[1:]]
    p.write_text(
        "\n".join([lines[0], *(f"{a},{fn(i, int(t))}" for i, (a, t) in enumerate(rows))]) + "\n"
    )


def test_mixed_timestamp_units_refused_or_converted(raw, tmp_path):
    _set_timestamps(raw, lambda i, t: t * 1000 if i % 2 else t)  # odd rows in milliseconds
    with pytest.raises(DataError) as err:
        run(raw, tmp_path)
    msg = str(err.value)
    assert "interactions.csv mixes timestamp units: line 2 has 1600000000 (seconds)" in msg
    assert "line 3 has" in msg and "data.reader.timestamp_unit=s" in msg and "\n" not in msg
    seconds = run(raw, tmp_path, {"timestamp_unit": "s"})
    assert seconds.manifest["counts"]["timestamps_converted"] == 96
    assert all_interactions(seconds)["timestamp"].max() < 10**11
    millis = run(raw, tmp_path, {"timestamp_unit": "ms"})
    assert millis.manifest["counts"]["timestamps_converted"] == 96
    assert all_interactions(millis)["timestamp"].min() >= 10**11
    with pytest.raises(ConfigError, match="timestamp_unit='hours' is unknown"):
        run(raw, tmp_path, {"timestamp_unit": "hours"})


def test_one_unit_throughout_is_kept_as_it_is(raw, tmp_path):
    _set_timestamps(raw, lambda i, t: t * 1000)
    ds = run(raw, tmp_path)
    assert ds.manifest["counts"]["timestamps_converted"] == 0
    assert all_interactions(ds)["timestamp"].min() >= 10**12


def test_row_with_extra_fields_names_its_line(raw, tmp_path):
    p = raw / "interactions.csv"
    lines = p.read_text().splitlines()
    lines[5] += ",oops"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        run(raw, tmp_path)
    assert str(err.value).startswith(f"{p} line 6 has 4 fields but the header has 3")
    assert "\n" not in str(err.value)


def test_unterminated_quote_names_its_line(raw, tmp_path):
    p = raw / "item_info.csv"
    lines = p.read_text().splitlines()
    lines[3] = lines[3].replace('"Title 2"', '"Title 2')
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"item_info.csv line 4 is not valid CSV .*quoting"):
        run(raw, tmp_path)


def test_quote_inside_an_unquoted_field_names_its_line(raw, tmp_path):
    p = raw / "item_info.csv"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace("tag1", 'tag"1')
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r'item_info.csv line 3: a " inside a field that is not in'):
        run(raw, tmp_path)


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf-16", "item_info.csv is UTF-16; re-save it as UTF-8"),
        ("utf-32", "item_info.csv is UTF-32; re-save it as UTF-8"),
        ("utf-16-le", "item_info.csv line 1 holds a NUL byte"),
    ],
)
def test_utf16_input_is_named_not_reported_as_missing_columns(raw, tmp_path, encoding, message):
    p = raw / "item_info.csv"
    p.write_bytes(p.read_text().encode(encoding))
    with pytest.raises(DataError, match=message):
        run(raw, tmp_path)


def test_dangling_cover_symlink_counts_as_missing(raw, tmp_path):
    cover = raw / "covers" / "i0.jpg"
    cover.unlink()
    cover.symlink_to(raw / "covers" / "gone.jpg")
    ds = run(raw, tmp_path, kcore=1)
    assert ds.manifest["counts"]["cover_missing"] == 1 and "i0" not in set(ds.item_ids)


def test_permission_errors_are_one_line_naming_the_path(raw, tmp_path, monkeypatch):
    import multirec.data.covers as covers_mod
    import multirec.data.prepare as prep

    denied = raw / "interactions.csv"

    def no_read(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    with monkeypatch.context() as m:
        m.setattr(prep, "file_digest", no_read)
        with pytest.raises(MultirecError) as err:
            run(raw, tmp_path)
    assert str(err.value) == (
        f"cannot read {denied} (Permission denied); "
        "make the raw data readable by this user or set data.root"
    )
    with monkeypatch.context() as m:
        m.setattr(covers_mod.Image, "open", no_read)
        with pytest.raises(DataError, match=r"cannot read cover .*i\d+.jpg \(permission denied\)"):
            run(raw, tmp_path)
    out = tmp_path / "prepared"
    mkdir = Path.mkdir

    def no_write(self, *a, **k):
        if self == out or out in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return mkdir(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", no_write)
        with pytest.raises(MultirecError, match=rf"cannot write {out} \(Permission denied\); "):
            run(raw, tmp_path)


def test_outputs_follow_the_umask(raw, tmp_path):
    old = os.umask(0o002)
    try:
        ds = run(raw, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(ds.root.stat().st_mode) == 0o775
    for f in ds.root.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o664, f


PREP_CHILD = """
import logging, sys, time
from pathlib import Path
from multirec.data import covers, prepare
from multirec.data.config import DataConfig

stage, raw, out, flag = sys.argv[1:5]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

def stalling(fn):  # say so, then wait to be stopped, or for the go-ahead
    def stall(*args, **kwargs):
        Path(flag).touch()
        deadline = time.monotonic() + 300
        while not Path(flag + ".go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return fn(*args, **kwargs)
    return stall

if stage == "covers":
    covers.JOB_SIZE = 2  # several jobs, so the worker pool runs (workers are forked: patched too)
    covers.check_cover = stalling(covers.check_cover)
elif stage == "write":  # the manifest, written last into the temporary folder
    prepare.atomic_write_json = stalling(prepare.atomic_write_json)
cfg = DataConfig(name="t", root=raw)
cfg.covers.min_side, cfg.covers.workers, cfg.tags.min_count = 16, 2, 1
prepare.prepare(cfg, out, progress=False)
"""


def prep_child(stage: str, raw: Path, out: Path, flag: Path) -> subprocess.Popen:
    """A preparation in another process; ``covers`` / ``write`` stall at that stage."""
    return subprocess.Popen(
        [sys.executable, "-c", PREP_CHILD, stage, str(raw), str(out), str(flag)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(flag: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (a zombie has exited; it waits for its reaper)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


# Exit status: Ctrl-C ends with SIGINT after unwinding, SIGTERM with SystemExit(143).
STOPPED = {signal.SIGINT: -signal.SIGINT, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


@pytest.mark.parametrize("stage", ["covers", "write"])
@pytest.mark.parametrize("sig", list(STOPPED))
def test_stopped_preparation_leaves_no_workers_or_temporary_folders(raw, tmp_path, stage, sig):
    out, flag = tmp_path / "prepared", tmp_path / "stalled"
    proc = prep_child(stage, raw, out, flag)
    wait_for(flag, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) == (2 if stage == "covers" else 0)
    proc.send_signal(sig)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == STOPPED[sig], log
    deadline = time.monotonic() + 10
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(workers)
    left = sorted(p.name for p in out.iterdir())
    if sig == signal.SIGKILL:  # nothing could clean up: the next run does
        assert [n.endswith(".multirec.lock") for n in left] == [True] + [False] * (stage == "write")
        assert all(".tmp-" in n for n in left[1:])
        ds = run(raw, tmp_path)
        assert [p.name for p in out.iterdir()] == [ds.root.name]
    else:
        assert left == []


def test_second_preparation_waits_for_the_first_and_reuses_it(raw, tmp_path):
    out, flag = tmp_path / "prepared", tmp_path / "stalled"
    first = prep_child("write", raw, out, flag)
    seen = []
    try:
        wait_for(flag, first)
        second = prep_child("plain", raw, out, flag)
        for line in second.stdout:  # until it says it waits (or ends)
            seen.append(line)
            if "waiting up to" in line:
                break
    finally:
        Path(f"{flag}.go").touch()
    logs = [first.communicate(timeout=120)[0], "".join(seen) + second.communicate(timeout=120)[0]]
    assert [first.returncode, second.returncode] == [0, 0], logs
    (ds,) = out.iterdir()
    assert (
        f"for another process preparing {ds} (lock {out / f'.{ds.name}.multirec.lock'})" in logs[1]
    )
    assert f"prepared dataset written: {ds}" in logs[0]
    assert f"prepared dataset up to date: {ds}" in logs[1] and "written" not in logs[1]
