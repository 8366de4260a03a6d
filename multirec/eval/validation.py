"""The validation scorer iterative models early-stop on: full-ranking NDCG@k on ``valid``.

Models receive it as a plain callable (:data:`multirec.models.base.Validation`) through
``fit(dataset, validation)``, so model code never imports the evaluation package; entry
points build it here. Scoring goes through :func:`multirec.eval.evaluator.evaluate`, the
same code that reports test metrics, so a model is selected on exactly the quantity it is
later judged by, only on the other split.
"""

from __future__ import annotations

from multirec.data.dataset import PreparedDataset
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol
from multirec.eval.registry import MetricSet
from multirec.models.base import Recommender, Validation


def full_ranking_validation(
    dataset: PreparedDataset,
    k: int = 10,
    *,
    user_fraction: float = 1.0,
    seed: int = 2024,
    batch_size: int | None = None,
) -> Validation:
    """``model -> valid/full/ndcg@k`` on ``dataset``: every item ranked, training items masked.

    ``user_fraction`` < 1 scores a seeded subset of the validation users (cheaper per call on
    large data). The lists are built on the first call, so models that never validate pay
    nothing.
    """
    protocol = FullProtocol(user_fraction=user_fraction, seed=seed)
    metrics = MetricSet(["ndcg"], ks=(k,))
    key = f"valid/{protocol.name}/ndcg@{k}"

    def score(model: Recommender) -> float:
        result = evaluate(model, dataset, protocol, "valid", metrics=metrics, batch_size=batch_size)
        return result.metrics[key]

    return score
