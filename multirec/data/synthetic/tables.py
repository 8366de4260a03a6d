"""The CSV files of a sample: PixelRec's two tables and the ground-truth topics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from multirec.data.pixelrec import COUNT_COLUMNS
from multirec.data.synthetic.world import World


def write_tables(root: Path, world: World) -> None:
    """Write ``interactions.csv``, ``item_info.csv`` and ``_topics.csv`` into ``root``.

    Interactions keep the world's time order; the item tables are sorted by item id.
    """
    pl.DataFrame(
        {
            "item_id": world.item_ids[world.inter_item],
            "user_id": world.user_ids[world.inter_user],
            "timestamp": world.inter_time.astype(np.int64),
        }
    ).write_csv(root / "interactions.csv")
    order = np.argsort(world.item_ids, kind="stable")
    _item_info(world, order).write_csv(root / "item_info.csv")
    pl.DataFrame(
        {
            "item_id": world.item_ids[order],
            "topic": world.item_topic[order],
            "cover_topic": world.cover_topic[order],
            "misleading": world.item_topic[order] != world.cover_topic[order],
            "vague_text": world.vague_text[order],
            "cover_defect": pl.Series(world.cover_defect[order]).replace("", None),
        }
    ).write_csv(root / "_topics.csv")


def _item_info(world: World, order: np.ndarray) -> pl.DataFrame:
    """Counts (missing as empty cells), title, tag and description per item, in ``order``."""
    columns: dict[str, pl.Series] = {"item_id": pl.Series(world.item_ids[order])}
    for name in COUNT_COLUMNS:
        columns[name] = pl.Series(world.counts[name][order], nan_to_null=True).cast(pl.Int64)
    for name, values in (
        ("title", world.titles),
        ("tag", world.tags),
        ("description", world.descriptions),
    ):
        columns[name] = pl.Series([values[i] for i in order], dtype=pl.String)
    return pl.DataFrame(columns)
