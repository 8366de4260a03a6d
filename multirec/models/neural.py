"""What every neural recommender shares: a LightningModule answering the Recommender interface.

A neural model is built from its config node (``conf/model/<name>.yaml``, ``_target_``) plus
the dataset's sizes, which every entry point passes the same way (:func:`dataset_sizes`), so a
new model is one class and one YAML. It only scores and trains: evaluation runs in
:class:`multirec.eval.callback.RankingEvaluation`, and item features come from the pipeline
(:meth:`NeuralRecommender.attach`).

A checkpoint records which model it holds by the model's registry name (``MODELS``), never
by an import path, so loading a checkpoint can only build one of multirec's own classes.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from omegaconf import DictConfig, OmegaConf

from multirec.config import build
from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, MultirecError
from multirec.models.base import Recommender, Validation
from multirec.models.items import ItemInputs

MODELS: dict[str, type[NeuralRecommender]] = {}
"""Registry name -> class of every neural model a checkpoint may name."""


def register(name: str) -> Any:
    """Class decorator: make a neural model loadable from checkpoints under ``name``."""

    def add(cls: type[NeuralRecommender]) -> type[NeuralRecommender]:
        if MODELS.get(name, cls) is not cls:
            raise MultirecError(f"two neural models registered as {name!r}")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return add


def build_model(
    node: Any, sizes: dict[str, int], provenance: dict | None = None
) -> NeuralRecommender:
    """The neural model a ``model`` config node describes, of the given :func:`dataset_sizes`.

    Its settings arrive as plain containers and nested nodes (fusion, loss, the encoder
    configs in ``provenance``) unbuilt, so that its checkpoints hold data only; a model
    builds its own parts from them.
    """
    if isinstance(node, DictConfig) and "defaults" in node:
        # a conf/model YAML read as a file, not composed: its defaults list names the tuning
        # space (conf/model/search/), which is no setting of the model
        node = OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])
    model = build(node, **sizes, provenance=provenance, _convert_="all", _recursive_=False)
    if not isinstance(model, NeuralRecommender):
        raise ConfigError(f"model._target_ {node.get('_target_')} is not a multirec neural model")
    return model


def dataset_sizes(dataset: PreparedDataset, items: ItemInputs) -> dict[str, int]:
    """The sizes every neural model is built with (it uses those it needs)."""
    return {
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "n_tags": dataset.n_tags,
        "n_numeric": len(dataset.numeric_columns),
        "visual_dim": items.visual_dim,
        "text_dim": items.text_dim,
    }


class NeuralRecommender(L.LightningModule, Recommender):
    """Base of the neural models. Subclasses implement ``training_step``, ``score`` and
    ``score_all`` and may override :meth:`attach_items` to precompute from the features."""

    registry_name: ClassVar[str | None] = None
    fit_max_epochs: ClassVar[int] = 20  # Recommender.fit() outside multirec.train
    fit_patience: ClassVar[int] = 3

    def __init__(self) -> None:
        super().__init__()
        self.items: ItemInputs | None = None

    def attach(self, dataset: PreparedDataset, items: ItemInputs) -> None:
        """Bind the model to ``dataset`` and give it the item features and training matrix.

        Neither is saved in checkpoints: the feature caches and the prepared dataset are the
        source of truth, and loading checks that they match the ones trained with.
        """
        self.bind(dataset)
        self.attach_items(items, dataset.interaction_matrix("train"))

    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix) -> None:
        self.items = items

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.registry_name is None:
            raise MultirecError(
                f"{type(self).__name__} is not registered (multirec.models.neural.register), "
                "so its checkpoints could not be loaded; register it under a name"
            )
        checkpoint["multirec_model"] = self.registry_name
        if self.fitted_on is not None:
            checkpoint["multirec_fitted_on"] = self.fitted_on.to_dict()

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        """Train with the default data module; with ``validation``, stop early on it and keep
        the best epoch's weights. ``multirec.train`` is the configurable recipe."""
        from multirec.data.datamodule import RecDataModule

        if self.items is None:
            raise MultirecError(f"{self.name}: call attach(dataset, items) before fit()")
        callbacks = (
            [] if validation is None else [ValidationStopping(validation, self.fit_patience)]
        )
        trainer = L.Trainer(
            max_epochs=self.fit_max_epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        trainer.fit(self, datamodule=RecDataModule(dataset, seed=0))
        for cb in callbacks:
            cb.restore_best(self)


class ValidationStopping(L.Callback):
    """Early stopping on a :data:`Validation` scorer, keeping the best epoch's weights."""

    def __init__(self, validation: Validation, patience: int) -> None:
        self.validation = validation
        self.patience = patience
        self.best = -np.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.waited = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = float(self.validation(pl_module))
        if value > self.best:
            self.best, self.waited = value, 0
            self.best_state = copy.deepcopy(pl_module.state_dict())
        else:
            self.waited += 1
            trainer.should_stop = self.waited >= self.patience

    def restore_best(self, model: L.LightningModule) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
