"""``python -m multirec.recommend ckpt_path=... user=<id> | users=all | users=[a,b] [k=10] [include_cold=true]``

Prints the user's top-k items (score, probability = sigmoid of the score, title) from a
trained checkpoint, training items excluded, and writes them to ``recommendations.csv``
in the run directory. With ``users=`` (``all``, or a list of ids) it writes the top-k of
each of those users instead, to ``recommendations.parquet`` (``user_id, rank, item_id,
score``), scored many users per model call. Items without training interactions ("cold": new items) are
scored from their content alone and are only recommended with ``include_cold=true``;
``held_out`` marks the user's validation/test items (hits of the model).
"""

from __future__ import annotations

import io
from pathlib import Path

import hydra
import polars as pl
from omegaconf import DictConfig, ListConfig

from multirec.cli import user_errors
from multirec.errors import ConfigError
from multirec.io import atomic_write_bytes
from multirec.pipeline.checkpoints import checkpoint_dataset, load_checkpoint
from multirec.reporting.inspect import recommend, recommend_all, user_index


def format_recommendations(recs: pl.DataFrame, title_width: int = 50) -> str:
    """Aligned plain-text lines, titles cut to ``title_width`` characters."""
    lines = [
        f"{'rank':>4}  {'item_id':<12} {'score':>8} {'prob':>7}  {'cold':<5} {'held_out':<8}  title"
    ]
    for r in recs.iter_rows(named=True):
        title = (r["title"] or "").replace("\n", " ")
        title = title if len(title) <= title_width else title[: title_width - 1] + "\u2026"
        lines.append(
            f"{r['rank']:>4}  {r['item_id']:<12} {r['score']:>8.4f} {r['probability']:>7.2%}  "
            f"{str(r['cold']).lower():<5} {str(r['held_out']).lower():<8}  {title}"
        )
    return "\n".join(lines)


def _users(cfg: DictConfig) -> list[str] | None:
    """The ids ``users=`` names; None for ``all``."""
    if cfg.users == "all":
        return None
    if isinstance(cfg.users, ListConfig) and len(cfg.users) > 0:
        return [str(u) for u in cfg.users]
    raise ConfigError(f"users= takes all or a list of user ids like [u1,u2], got {cfg.users!r}")


def check_request(cfg: DictConfig) -> None:
    """Refuse a missing checkpoint, both or neither of user/users, or a bad k, in one line."""
    if cfg.ckpt_path is None:
        raise ConfigError(
            "ckpt_path= is required, e.g. python -m multirec.recommend ckpt_path=.../best.ckpt user=u123"
        )
    if (cfg.user is None) == (cfg.users is None):
        raise ConfigError(
            "name the users: user=<id> for one (printed), or users=all / users=[u1,u2] for a "
            "parquet file, e.g. python -m multirec.recommend ckpt_path=.../best.ckpt user=u123"
        )
    if not isinstance(cfg.k, int) or isinstance(cfg.k, bool) or cfg.k < 1:
        raise ConfigError(f"k must be a whole number >= 1, got {cfg.k!r}")


def run(cfg: DictConfig) -> pl.DataFrame:
    """Recommend for the configured user(s); print or write the lists; return them."""
    check_request(cfg)
    ds = checkpoint_dataset(cfg.ckpt_path, cfg.paths.prepared_dir)
    if cfg.users is not None:
        user_ids = _users(cfg)
        for user in user_ids or []:
            user_index(ds, user)  # an unknown user fails before the model is built
        model = load_checkpoint(cfg.ckpt_path, ds, cfg.paths.cache_dir, cfg.device).eval()
        recs = recommend_all(model, ds, user_ids, cfg.k, include_cold=bool(cfg.include_cold))
        out = Path(cfg.paths.output_dir) / "recommendations.parquet"
        buffer = io.BytesIO()
        recs.write_parquet(buffer)
        atomic_write_bytes(out, buffer.getvalue())
        print(f"top {cfg.k} items of {recs['user_id'].n_unique()} users written to {out}")
        return recs
    user_index(ds, str(cfg.user))  # an unknown user fails before the model is built
    model = load_checkpoint(cfg.ckpt_path, ds, cfg.paths.cache_dir, cfg.device)
    recs = recommend(model, ds, str(cfg.user), cfg.k, include_cold=bool(cfg.include_cold))
    out = Path(cfg.paths.output_dir) / "recommendations.csv"
    atomic_write_bytes(out, recs.write_csv().encode())
    cold = (
        ""
        if cfg.include_cold
        else "; cold items, without training interactions, excluded: include_cold=true adds them"
    )
    print(
        f"top {len(recs)} items for user {cfg.user} on {ds.root.name} (training items excluded{cold}):"
    )
    print(format_recommendations(recs))
    print(f"written to {out}")
    return recs


@hydra.main(version_base="1.3", config_path="../conf", config_name="recommend")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
