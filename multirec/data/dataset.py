"""The prepared dataset: the contract between ``prepare`` and everything downstream.

A prepared directory (written by :mod:`multirec.data.prepare`) holds::

    manifest.json         fingerprint, settings, input digests, counts of all drops/fixes
    users.parquet         user_idx:int32, user_id:str
    items.parquet         item_idx:int32, item_id:str, title, text, tag, tag_idx:int32,
                          cover_path:str|null, cover_ok:bool, num_<count column>:float32 ...
    train.parquet         user_idx:int32, item_idx:int32, timestamp:int64
    valid.parquet         (same columns)
    test.parquet          (same columns)
    candidates/           evaluation candidate lists, written once by multirec.eval

External ids are strings and appear only at the edges; everything inside works on the
contiguous integer indices stored here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from multirec.errors import DataError

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Interactions:
    """One split as parallel integer arrays (row i is one positive interaction)."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


class PreparedDataset:
    """Read-only view of a prepared directory; loads each file on first use."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def load(cls, root: str | Path) -> PreparedDataset:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{path} not found: {root} is not a prepared dataset (run `python -m multirec.prepare`)"
            )
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} is not valid JSON ({exc}); delete {root} and prepare again"
            ) from exc
        for name in ("users.parquet", "items.parquet", *(f"{s}.parquet" for s in SPLITS)):
            if not (root / name).is_file():
                raise DataError(f"{root / name} is missing; delete {root} and prepare again")
        return cls(root, manifest)

    # -- identity ------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def n_users(self) -> int:
        return int(self.manifest["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.manifest["n_items"])

    @property
    def n_tags(self) -> int:
        """Number of tag categories, including the shared 'rare/unknown' category 0."""
        return int(self.manifest["n_tags"])

    @property
    def numeric_columns(self) -> list[str]:
        return list(self.manifest["numeric_columns"])

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    # -- tables --------------------------------------------------------------------
    @cached_property
    def items(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "items.parquet", glob=False).sort("item_idx")

    @cached_property
    def users(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "users.parquet", glob=False).sort("user_idx")

    @cached_property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy()

    @cached_property
    def user_ids(self) -> np.ndarray:
        return self.users["user_id"].to_numpy()

    def split(self, name: str) -> Interactions:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return self._splits[name]

    @cached_property
    def _splits(self) -> dict[str, Interactions]:
        out = {}
        for name in SPLITS:
            df = pl.read_parquet(self.root / f"{name}.parquet", glob=False)
            out[name] = Interactions(
                users=df["user_idx"].to_numpy().astype(np.int64),
                items=df["item_idx"].to_numpy().astype(np.int64),
                timestamps=df["timestamp"].to_numpy().astype(np.int64),
            )
        return out

    @property
    def train(self) -> Interactions:
        return self.split("train")

    @property
    def valid(self) -> Interactions:
        return self.split("valid")

    @property
    def test(self) -> Interactions:
        return self.split("test")

    def interaction_matrix(self, *splits: str) -> sp.csr_matrix:
        """Binary user x item CSR matrix over the given splits (default: train only)."""
        parts = [self.split(s) for s in (splits or ("train",))]
        users = np.concatenate([p.users for p in parts])
        items = np.concatenate([p.items for p in parts])
        m = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)),
            shape=(self.n_users, self.n_items),
        )
        m.data[:] = 1.0  # duplicates across splits collapse to one
        return m

    def seen_items(self) -> np.ndarray:
        """Bool mask over items: True where the item has a training interaction.

        Items without one are cold: only content can score them.
        """
        seen = np.zeros(self.n_items, dtype=bool)
        seen[self.train.items] = True
        return seen

    # -- item side information -------------------------------------------------------
    def texts(self) -> list[str]:
        return self.items["text"].to_list()

    def cover_paths(self) -> list[str | None]:
        return self.items["cover_path"].to_list()

    def tag_index(self) -> np.ndarray:
        return self.items["tag_idx"].to_numpy().astype(np.int64)

    def numeric_features(self) -> np.ndarray:
        cols = [f"num_{c}" for c in self.numeric_columns]
        if not cols:
            return np.zeros((self.n_items, 0), dtype=np.float32)
        return self.items.select(cols).to_numpy().astype(np.float32)
