"""Readers: a new raw format is one Reader class plus its ``data.reader`` node, prepared by
the unchanged preparation; a bad reader node is one ConfigError line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from multirec.data.config import DataConfig
from multirec.data.pixelrec import pixelrec_node
from multirec.data.prepare import prepare
from multirec.data.readers import RawData, Reader, Sources, build_reader
from multirec.errors import ConfigError
from multirec.pipeline.stages import data_config
from tests.conftest import compose_cfg
from tests.rawdata import jpeg_bytes, write_raw


@pytest.fixture
def raw_root(tmp_path):
    return write_raw(tmp_path / "raw")


class JsonLinesReader(Reader):
    """A toy format: events and items as JSON lines, covers named inside the item records."""

    def __init__(self, events: str = "events.jsonl", items: str = "items.jsonl") -> None:
        self.events = events
        self.items = items

    def inputs(self, root: Path) -> dict[str, Path]:
        return {"events": root / self.events, "items": root / self.items, "covers": root / "img"}

    def read(self, root: Path) -> RawData:
        events = pl.read_ndjson(root / self.events)
        items = pl.read_ndjson(root / self.items)
        return RawData(
            interactions=events.select(
                pl.col("who").alias("user_id"),
                pl.col("what").alias("item_id"),
                pl.col("when").alias("timestamp"),
            ),
            items=items.select(
                pl.col("id").alias("item_id"),
                pl.col("name").alias("title"),
                pl.col("genre").alias("tag"),
                pl.lit("").alias("description"),
                pl.col("plays").cast(pl.Float64),
            ),
            cover_files={r["id"]: root / r["cover"] for r in items.iter_rows(named=True)},
            count_columns=["plays"],
            sources=Sources(root / self.events, root / self.items, root / "img"),
        )


def write_jsonl(root: Path, n_users: int = 12, n_items: int = 10, per_user: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    with open(root / "events.jsonl", "w") as f:
        for u in range(n_users):
            for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
                f.write(json.dumps({"who": f"u{u}", "what": f"i{i}", "when": 1000 * t + u}) + "\n")
    with open(root / "items.jsonl", "w") as f:
        for i in range(n_items):
            (root / "img" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
            record = {"id": f"i{i}", "name": f"Song {i}", "genre": f"g{i % 3}", "plays": 10 * i}
            f.write(json.dumps({**record, "cover": f"img/{i}.jpg"}) + "\n")
    return root


TOY_YAML = """
name: toy
root: {root}
reader:
  _target_: tests.test_readers.JsonLinesReader
  events: events.jsonl
kcore: 3
covers: {{min_side: 16, workers: 1}}
tags: {{min_count: 1}}
"""


def test_a_new_format_is_one_reader_class_and_its_config(tmp_path):
    root = write_jsonl(tmp_path / "raw")
    (tmp_path / "myconf" / "data").mkdir(parents=True)
    (tmp_path / "myconf" / "data" / "toy.yaml").write_text(TOY_YAML.format(root=root))
    search = f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"
    cfg = data_config(compose_cfg("prepare", [search, "data=toy"], tmp_path).data)
    ds = prepare(cfg, tmp_path / "prepared", progress=False)
    assert ds.root.name.startswith("toy-") and ds.numeric_columns == ["plays"]
    assert set(ds.item_ids) <= {f"i{i}" for i in range(10)} and ds.n_users == 12
    assert all(t.startswith("Song ") for t in ds.texts())
    assert ds.items["cover_ok"].all()
    assert set(ds.manifest["inputs"]) == {"events", "items", "covers", "root"}
    assert prepare(cfg, tmp_path / "prepared", progress=False).root == ds.root  # reused
    (root / "img" / "0.jpg").write_bytes(jpeg_bytes(0, size=64))  # a new cover: a new dataset
    assert prepare(cfg, tmp_path / "prepared", progress=False).root != ds.root


def test_pixelrec_yaml_and_the_default_reader_node_agree(tmp_path):
    composed = compose_cfg("prepare", ["data=pixelrec", "data.root=/r"], tmp_path)
    assert data_config(composed.data).reader == DataConfig().reader
    assert DataConfig().reader == pixelrec_node()


def _bad_nodes() -> list[tuple[dict, str]]:
    unknown_file = pixelrec_node()
    unknown_file["files"]["X"] = "x.csv"
    unknown_setting = {**pixelrec_node(), "filez": {}}
    return [
        (unknown_file, "config data.reader.files.X: Key 'X' not in 'PixelRecFiles'"),
        (unknown_setting, "unexpected keyword argument 'filez'"),
        ({"_target_": "collections.OrderedDict"}, "_target_=collections.OrderedDict is not a"),
        ({"_target_": "no_such_module.Reader"}, "_target_=no_such_module.Reader cannot be imp"),
        ({"files": {}}, "config data.reader: _target_ is required"),
    ]


@pytest.mark.parametrize(("reader", "message"), _bad_nodes())
def test_a_bad_reader_node_is_one_config_error_line(raw_root, tmp_path, reader, message):
    cfg = DataConfig(name="t", root=str(raw_root), reader=reader)
    with pytest.raises(ConfigError) as err:
        prepare(cfg, tmp_path / "prepared", progress=False)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "prepared").exists()  # refused before anything is read or written


def test_a_reader_returning_wrong_tables_names_the_column(tmp_path):
    root = write_jsonl(tmp_path / "raw")
    raw = JsonLinesReader().read(root)
    with pytest.raises(TypeError, match=r"RawData.interactions needs column 'timestamp'"):
        RawData(raw.interactions.drop("timestamp"), raw.items, {}, [], raw.sources)
    with pytest.raises(TypeError, match=r"'plays' of type Float64; the reader gave Int64"):
        RawData(
            raw.interactions,
            raw.items.with_columns(pl.col("plays").cast(pl.Int64)),
            {},
            ["plays"],
            raw.sources,
        )


def test_build_reader_builds_the_named_class():
    assert isinstance(build_reader({"_target_": f"{__name__}.JsonLinesReader"}), JsonLinesReader)
