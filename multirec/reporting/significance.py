"""Paired significance test of two table rows on their per-list results.

Both rows must have been scored on the *same* lists (the saved candidates): the lists are
matched on their key columns (the user and held-out item of a sampled list, the user of a
full-ranking list) and a mismatch is reported instead of tested. A row with several
seeds contributes, per list, the mean of its seeds' values, so the test compares the two
configurations' expected per-list quality; the unit of replication is the list.

Both the paired t-test and the Wilcoxon signed-rank test are reported: per-list NDCG is
bounded and far from normal (many lists score 0), so the rank test is the safer reading;
with thousands of lists both agree in practice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

from multirec.eval.evaluator import list_key_columns
from multirec.reporting.tables import Row


@dataclass(frozen=True)
class PairedTest:
    metric: str
    split: str
    protocol: str
    a: str  # label of the first row (the best model)
    b: str  # label of the second row (the strongest baseline)
    n_lists: int
    mean_a: float
    mean_b: float
    diff: float  # mean of a - b over lists
    ci_low: float  # 95 % confidence interval of diff (t distribution)
    ci_high: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        return (
            f"Paired test on per-list {self.metric} ({self.n_lists} lists, each row's seeds averaged per list): "
            f"{self.a} {self.mean_a:.4f} vs {self.b} {self.mean_b:.4f}, difference {self.diff:+.4f} "
            f"(95% CI {self.ci_low:+.4f} to {self.ci_high:+.4f}); paired t-test p = {self.t_pvalue:.3g}, "
            f"Wilcoxon signed-rank p = {self.wilcoxon_pvalue:.3g}."
        )


def key_columns(split: str, protocol: str) -> tuple[str, ...]:
    """Columns identifying a list across models (the evaluator's rule)."""
    return list_key_columns(per_user=protocol == "full")


def per_list(row: Row, split: str, protocol: str, metric: str) -> pl.DataFrame | str:
    """Keys and the seeds' mean ``metric`` per list, or why that is not possible."""
    keys = list(key_columns(split, protocol))
    frames = []
    for e in row.entries:
        path = e.lists.get((split, protocol))
        if path is None:
            return f"{row.label} (seed {e.seed}) has no per-list results for {split}/{protocol}"
        if metric not in pl.read_parquet_schema(path):
            return f"{row.label} (seed {e.seed}) has no per-list {metric} for {split}/{protocol}"
        frames.append(pl.read_parquet(path, columns=[*keys, metric], glob=False))
    n = len(frames)
    if len({f.height for f in frames}) > 1:
        return f"the seeds of {row.label} were scored on different numbers of lists"
    merged = pl.concat(frames).group_by(keys).agg(pl.col(metric).mean(), pl.len().alias("n"))
    if merged.height != frames[0].height or (merged["n"] != n).any():
        return f"the seeds of {row.label} were scored on different lists"
    return merged.drop("n")


def paired_test(
    a: Row, b: Row, split: str, protocol: str, metric: str = "ndcg@10"
) -> PairedTest | str:
    """Test ``a`` against ``b`` on their per-list ``metric``; a string says why it cannot be done."""
    fa, fb = per_list(a, split, protocol, metric), per_list(b, split, protocol, metric)
    for f in (fa, fb):
        if isinstance(f, str):
            return f
    keys = list(key_columns(split, protocol))
    joined = fa.join(fb, on=keys, how="inner", suffix="_b")
    if not (joined.height == fa.height == fb.height):
        return (
            f"{a.label} and {b.label} were not scored on the same lists ({fa.height} and {fb.height} lists, "
            f"{joined.height} in common); evaluate both on the same saved candidates"
        )
    if joined.height < 2:
        return f"only {joined.height} list(s): too few for a test"
    x = joined[metric].to_numpy().astype(np.float64)
    y = joined[f"{metric}_b"].to_numpy().astype(np.float64)
    d = x - y
    n = d.size
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    if not d.any():  # identical per-list results: no evidence of any difference
        t_stat, t_p, w_stat, w_p = 0.0, 1.0, 0.0, 1.0
    else:
        t, w = stats.ttest_rel(x, y), stats.wilcoxon(d)
        t_stat, t_p, w_stat, w_p = (
            float(t.statistic),
            float(t.pvalue),
            float(w.statistic),
            float(w.pvalue),
        )
    return PairedTest(
        metric,
        split,
        protocol,
        a.label,
        b.label,
        n,
        float(x.mean()),
        float(y.mean()),
        float(d.mean()),
        float(d.mean()) - half,
        float(d.mean()) + half,
        t_stat,
        t_p,
        w_stat,
        w_p,
    )
