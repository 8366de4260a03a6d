"""``python -m multirec.recommend ckpt_path=... user=<id> [k=10] [include_cold=true]``

Prints the user's top-k items (score, probability = sigmoid of the score, title) from a
trained checkpoint, training items excluded, and writes them to ``recommendations.csv``
in the run directory. Items without training interactions ("cold": new items) are
scored from their content alone and are only recommended with ``include_cold=true``;
``held_out`` marks the user's validation/test items (hits of the model).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import polars as pl
from omegaconf import DictConfig

from multirec.cli import user_errors
from multirec.errors import ConfigError
from multirec.io import atomic_write_bytes
from multirec.pipeline.checkpoints import checkpoint_dataset, load_checkpoint
from multirec.reporting.inspect import recommend, user_index


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


def run(cfg: DictConfig) -> pl.DataFrame:
    """Recommend for the configured user; print the list and write ``recommendations.csv``."""
    for key in ("ckpt_path", "user"):
        if cfg[key] is None:
            raise ConfigError(
                f"{key}= is required, e.g. python -m multirec.recommend ckpt_path=.../best.ckpt user=u123"
            )
    if not isinstance(cfg.k, int) or isinstance(cfg.k, bool) or cfg.k < 1:
        raise ConfigError(f"k must be a whole number >= 1, got {cfg.k!r}")
    ds = checkpoint_dataset(cfg.ckpt_path, cfg.paths.prepared_dir)
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
