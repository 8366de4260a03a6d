"""The synthetic PixelRec-format sample: format, determinism, latent structure, defects."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from multirec.data.kcore import kcore_mask
from multirec.data.pixelrec import COUNT_COLUMNS
from multirec.data.synthetic import (
    COVER_DEFECTS,
    PRESETS,
    generate_sample,
    is_current,
    read_world,
    rendering,
)
from multirec.data.synthetic.item_text import _FILLER, _GENERIC_TAGS
from multirec.errors import ConfigError, MultirecError
from tests.conftest import compose_cfg

REPO = Path(__file__).resolve().parents[1]
UNUSABLE = ("missing", "corrupt", "truncated", "too_small")


def cover_path(root: Path, item_id: str) -> Path | None:
    for ext in ("jpg", "png"):
        path = root / "covers" / f"{item_id}.{ext}"
        if path.is_file():
            return path
    return None


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def codes(values: pl.Series) -> np.ndarray:
    return values.cast(pl.Categorical).to_physical().to_numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("s") / "tiny", "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def tables(tiny):
    topics = pl.read_csv(tiny / "_topics.csv")
    inter = pl.read_csv(tiny / "interactions.csv").join(topics, on="item_id")
    info = pl.read_csv(tiny / "item_info.csv").join(topics, on="item_id")
    return inter, info, topics


def test_files_and_columns_are_pixelrec(tiny):
    assert {p.name for p in tiny.iterdir()} >= {
        "interactions.csv",
        "item_info.csv",
        "covers",
        "_topics.csv",
    }
    assert (tiny / "interactions.csv").read_text().splitlines()[0] == "item_id,user_id,timestamp"
    header = (tiny / "item_info.csv").read_text().splitlines()[0]
    assert header == ",".join(["item_id", *COUNT_COLUMNS, "title", "tag", "description"])
    assert (tiny / "_topics.csv").read_text().splitlines()[0] == (
        "item_id,topic,cover_topic,misleading,vague_text,cover_defect"
    )


def test_ids_degrees_and_counts(tables):
    inter, info, _ = tables
    preset = PRESETS["tiny"]
    assert inter["item_id"].str.contains(r"^i\d+$").all()
    assert inter["user_id"].str.contains(r"^u\d+$").all()
    assert inter["timestamp"].dtype == pl.Int64
    assert len(inter) == preset.n_interactions
    assert inter["user_id"].n_unique() == preset.n_users
    assert info["item_id"].n_unique() == len(info) == preset.n_items
    assert set(inter["item_id"]) <= set(info["item_id"])
    assert inter.select("user_id", "item_id").is_unique().all()
    per_user = inter.group_by("user_id").len()["len"]
    per_item = inter.group_by("item_id").len()["len"]
    assert per_user.min() >= 5 and per_user.max() == preset.max_user
    assert per_item.max() == preset.max_item
    # Counters are correlated with popularity and a few are missing.
    pop = info.join(inter.group_by("item_id").len(), on="item_id")
    assert pop.select(pl.corr("view_number", "len", method="spearman")).item() > 0.3
    assert sum(info[c].null_count() for c in COUNT_COLUMNS) > 0


def test_timestamps_increase_per_user(tables):
    inter, _, _ = tables
    assert inter["timestamp"].is_sorted()  # written as a time-ordered log
    gaps = inter.group_by("user_id").agg(pl.col("timestamp").diff().drop_nulls().min().alias("gap"))
    assert gaps["gap"].min() > 0


def test_same_seed_is_byte_identical_other_seed_differs(tiny, tmp_path):
    again = generate_sample(tmp_path / "again", "tiny", seed=0, progress=False)
    assert tree_bytes(again) == tree_bytes(tiny)
    other = tree_bytes(generate_sample(tmp_path / "other", "tiny", seed=1, progress=False))
    assert other["interactions.csv"] != tree_bytes(tiny)["interactions.csv"]
    assert other["item_info.csv"] != tree_bytes(tiny)["item_info.csv"]


def test_covers_do_not_depend_on_worker_count(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "POOL_MIN_COVERS", 1)
    monkeypatch.setattr(rendering, "COVER_CHUNK", 16)
    pooled = generate_sample(tmp_path / "pooled", "tiny", seed=0, progress=False)
    assert tree_bytes(pooled) == tree_bytes(tiny)


def test_users_prefer_few_topics(tables):
    inter, _, _ = tables
    users, topic = codes(inter["user_id"]), inter["topic"].to_numpy()
    counts = np.zeros((users.max() + 1, topic.max() + 1))
    np.add.at(counts, (users, topic), 1)
    n = counts.sum(1)
    # Chance that two interactions of one user share a topic, against independent draws.
    same = ((counts * (counts - 1)).sum(1) / (n * (n - 1))).mean()
    chance = ((np.bincount(topic) / len(topic)) ** 2).sum()
    assert same > 1.6 * chance


def test_read_world_gives_the_written_topics_and_the_tastes_interactions_follow(tiny, tables):
    inter, _, topics = tables
    world = read_world(tiny)
    written = dict(zip(topics["item_id"].cast(pl.String), topics["topic"], strict=True))
    assert [written[i] for i in world.item_ids] == world.item_topic.tolist()
    taste = world.user_topic_weights
    assert np.allclose(taste.sum(1), 1.0) and (taste >= 0).all()
    assert ((taste > 0).sum(1) <= 3).mean() > 0.9  # a few preferred topics each
    # interactions fall in a topic the user weighs far more often than topic shares explain
    row = {u: k for k, u in enumerate(world.user_ids)}
    users = np.array([row[u] for u in inter["user_id"].cast(pl.String)])
    in_taste = (taste[users, inter["topic"].to_numpy()] > 0).mean()
    chance = ((taste > 0).sum(1) / taste.shape[1]).mean()
    assert in_taste > 0.8 and in_taste > chance + 0.25, (in_taste, chance)


def test_read_world_refuses_a_folder_the_generator_did_not_write(tmp_path):
    with pytest.raises(ConfigError, match="_sample.json") as err:
        read_world(tmp_path)
    assert "\n" not in str(err.value)


def test_text_follows_item_topic(tables):
    _, info, _ = tables
    docs = [
        f"{t or ''} {d or ''}".split()
        for t, d in zip(info["title"], info["description"], strict=True)
    ]
    vocab = {w: k for k, w in enumerate(sorted({w for doc in docs for w in doc}))}
    bow = np.zeros((len(docs), len(vocab)))
    for row, doc in enumerate(docs):
        for w in doc:
            bow[row, vocab[w]] += 1
    bow /= np.maximum(np.linalg.norm(bow, axis=1, keepdims=True), 1e-9)
    topic = info["topic"].to_numpy()
    sim = bow @ bow.T
    np.fill_diagonal(sim, -1)
    has_text = bow.any(1)
    nearest = sim[has_text].argmax(1)
    assert (topic[nearest] == topic[has_text]).mean() > 0.9


def test_vague_share_rewrites_only_that_share_of_texts_and_nothing_else(tmp_path):
    plain = generate_sample(
        tmp_path / "plain", "tiny", broken_share=0, covers=False, progress=False
    )
    vague = generate_sample(
        tmp_path / "vague", "tiny", broken_share=0, vague_share=0.25, covers=False, progress=False
    )
    assert (plain / "interactions.csv").read_bytes() == (vague / "interactions.csv").read_bytes()
    before = pl.read_csv(plain / "item_info.csv")
    after = pl.read_csv(vague / "item_info.csv")
    marks = pl.read_csv(vague / "_topics.csv")["vague_text"].to_numpy()
    assert marks.sum() == round(0.25 * PRESETS["tiny"].n_items)
    assert not pl.read_csv(plain / "_topics.csv")["vague_text"].any()
    for column in ("title", "tag", "description"):
        assert (before[column].to_numpy()[~marks] == after[column].to_numpy()[~marks]).all()
    filler = set(_FILLER)
    for title, tag, description in (
        after.filter(pl.Series(marks)).select("title", "tag", "description").iter_rows()
    ):
        assert set(f"{title} {description}".split()) <= filler
        assert tag in _GENERIC_TAGS
    assert read_world(vague).vague_text.sum() == marks.sum()


def test_is_current_compares_settings_and_the_preset(tmp_path, monkeypatch):
    root = generate_sample(tmp_path / "s", "tiny", seed=3, covers=False, progress=False)
    assert is_current(root, size="tiny", seed=3, vague_share=None)
    assert not is_current(root, size="tiny", seed=4)
    assert not is_current(root, size="tiny", seed=3, vague_share=0.1)
    vague = generate_sample(
        tmp_path / "v", "tiny", seed=3, vague_share=0.1, covers=False, progress=False
    )
    assert is_current(vague, size="tiny", seed=3, vague_share=0.1)
    assert not is_current(vague, size="tiny", seed=3)  # not the preset's sample
    assert not is_current(tmp_path / "nothing", size="tiny", seed=3)
    # a sample drawn before its preset changed is not the one the preset now gives
    changed = dict(PRESETS, tiny=dataclasses.replace(PRESETS["tiny"], vague_share=0.2))
    monkeypatch.setattr("multirec.data.synthetic.generate.PRESETS", changed)
    assert not is_current(root, size="tiny", seed=3)


def test_covers_follow_cover_topic_and_misleading_share(tiny, tables):
    _, _, topics = tables
    assert topics["misleading"].sum() == round(PRESETS["tiny"].misleading_share * len(topics))
    assert (
        topics.filter("misleading")["topic"] != topics.filter("misleading")["cover_topic"]
    ).all()
    fine = topics.filter(pl.col("cover_defect").is_null())
    pixels = []
    for item_id in fine["item_id"]:
        with Image.open(cover_path(tiny, item_id)) as img:
            assert img.mode == "RGB" and img.size == (64, 64)
            pixels.append(np.asarray(img.resize((8, 8)), dtype=float).ravel())
    x, y = np.array(pixels), fine["cover_topic"].to_numpy()
    centroids = np.stack([x[y == t].mean(0) for t in range(y.max() + 1)])
    nearest = ((x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == y).mean() > 0.9


def test_every_kind_of_broken_input_is_present(tiny, tables):
    _, info, topics = tables
    defects = dict(zip(topics["cover_defect"], topics["item_id"], strict=True))
    assert set(COVER_DEFECTS) <= set(defects)
    assert cover_path(tiny, defects["missing"]) is None
    for kind in ("corrupt", "truncated"):
        with pytest.raises(OSError), Image.open(cover_path(tiny, defects[kind])) as img:
            img.load()
    modes = {
        "too_small": "RGB",
        "grayscale": "L",
        "cmyk": "CMYK",
        "rgba": "RGBA",
        "palette": "P",
        "16bit": "I;16",
    }
    for kind, mode in modes.items():
        with Image.open(cover_path(tiny, defects[kind])) as img:
            img.load()
            assert img.mode == mode
            assert (img.size == (8, 8)) == (kind == "too_small")
    assert any(p.suffix == ".png" for p in (tiny / "covers").iterdir())
    assert info["title"].null_count() >= 2
    assert info.filter(pl.col("title").is_null() & pl.col("description").is_null()).height >= 1
    assert info["description"].str.contains("<").any()


def test_clean_sample_has_no_defects(tmp_path):
    root = generate_sample(
        tmp_path / "clean", "tiny", broken_share=0, misleading_share=0, progress=False
    )
    topics = pl.read_csv(root / "_topics.csv")
    info = pl.read_csv(root / "item_info.csv")
    assert topics["cover_defect"].null_count() == len(topics)
    assert not topics["misleading"].any()
    assert info.null_count().sum_horizontal().item() == 0
    assert not info["description"].str.contains("<").any()
    for item_id in topics["item_id"]:
        with Image.open(cover_path(root, item_id)) as img:
            img.load()
            assert img.mode == "RGB"


def test_tiny_survives_a_5_core_after_dropping_unusable_covers(tables):
    inter, _, _ = tables
    usable = inter.filter(
        pl.col("cover_defect").is_null() | ~pl.col("cover_defect").is_in(UNUSABLE)
    )
    keep, _ = kcore_mask(codes(usable["user_id"]), codes(usable["item_id"]), 5)
    assert usable.filter(keep)["user_id"].n_unique() >= 0.8 * PRESETS["tiny"].n_users


def test_covers_false_writes_tables_only(tmp_path):
    root = generate_sample(tmp_path / "tables", "tiny", covers=False, progress=False)
    assert (root / "interactions.csv").is_file() and not (root / "covers").exists()


def test_refuses_foreign_directory_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(MultirecError, match="did not create"):
        generate_sample(foreign, "tiny", progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]

    own = generate_sample(tmp_path / "own", "tiny", seed=0, covers=False, progress=False)
    first = (own / "interactions.csv").read_bytes()
    generate_sample(own, "tiny", seed=1, covers=False, progress=False)
    assert (own / "interactions.csv").read_bytes() != first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": "huge"}, "valid sizes: tiny, mini, small, pixelrec50k"),
        ({"broken_share": 1.5}, "broken_share"),
        ({"misleading_share": "lots"}, "misleading_share"),
        ({"vague_share": -0.1}, "vague_share"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generate_sample(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def sample_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multirec.sample", *overrides],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "MULTIREC_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_reports_unknown_size_in_one_line(tmp_path):
    proc = sample_cli(tmp_path, "size=huge", f"out={tmp_path / 'x'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown sample size 'huge' (key size); valid sizes: tiny, mini, small, pixelrec50k"
    ]


def test_pixelrec50k_matches_the_papers_table_1(tmp_path):
    root = generate_sample(tmp_path / "p50k", "pixelrec50k", covers=False, progress=False)
    inter = pl.read_csv(root / "interactions.csv")
    per_user = inter.group_by("user_id").len()["len"]
    per_item = inter.group_by("item_id").len()["len"]
    assert (len(per_user), len(per_item), len(inter)) == (50_000, 82_865, 989_494)
    assert round(len(inter) / len(per_user), 2) == 19.79
    assert round(len(inter) / len(per_item), 2) == 11.94
    assert (per_user.max(), per_item.max(), per_user.min()) == (434, 146, 5)
    assert inter.select("user_id", "item_id").is_unique().all()


@pytest.mark.parametrize("size", ["tiny", "mini", "small", "pixelrec50k"])
def test_sample_takes_the_data_names_of_the_other_entry_points(size, tmp_path):
    """`multirec.sample data=X` writes where `multirec.train data=X` looks, with its settings;
    `size=X` names the same sample."""
    by_data = compose_cfg("sample", [f"data={size}"], tmp_path)
    assert (by_data.size, by_data.out, by_data.seed) == (size, by_data.data.root, 0)
    train = compose_cfg("train", [f"data={size}"], tmp_path)
    assert train.data.root == by_data.out and train.data.sample.size == size
    assert compose_cfg("sample", [f"size={size}"], tmp_path).out == by_data.out


def test_cli_keeps_other_settings_out_of_the_folder_training_uses(tmp_path):
    """Training regenerates the preset's sample in its folder, so a sample with other settings
    written there would be lost: refused, with the way out; with out=DIR it is written."""
    proc = sample_cli(tmp_path, "data=tiny", "vague_share=0.1", "covers=false")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path}/outputs/data/sample_tiny holds the sample data=tiny trains on; a "
        "sample with vague_share=0.1 goes to a folder of its own: add out=DIR"
    ]
    assert not (tmp_path / "outputs" / "data" / "sample_tiny").exists()
    own = tmp_path / "vague"
    proc = sample_cli(tmp_path, "data=tiny", "vague_share=0.1", "covers=false", f"out={own}")
    assert proc.returncode == 0, proc.stderr
    assert is_current(own, size="tiny", vague_share=0.1)


def test_cli_refuses_a_downloaded_dataset_as_a_sample(tmp_path):
    proc = sample_cli(tmp_path, "data=pixelrec")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data=pixelrec is a dataset you downloaded, not a sample: "
        "use data=tiny|mini|small|pixelrec50k"
    ]
