"""What a run is called and what its experiment logger receives.

Names, folders, tags and W&B groups are built from what actually ran: the composed
visual and text encoders (``encoder/visual=effnet encoder/text=none`` is ``effnet+none``,
whatever the ``encoder`` pair was called), the model, fusion and loss, and every
setting the job overrode beyond those; not from the name of the pair chosen.

A Hydra sweep runs its jobs one after another in one process, and W&B keeps one run per
process until it is finished: :func:`one_run_per_job` finishes it when the job ends, so
the next job opens a run of its own. The resolvers below are registered on import (the
entry points import this module through :mod:`multirec.cli`) and used by ``conf/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

MULTIREC_MODEL = "multimodal"  # the `model` choice of multirec's own recommender
# Overrides that change where a run writes, what it logs or how fast it runs, not what it
# computes: left out of names (the full config is logged either way).
INFRA_OVERRIDE = re.compile(
    r"^(paths|logger|hydra|callbacks|threads|compare)(\.|$)"
    r"|^(seed|ckpt_path|device|test|task_name|extract_workers|allow_long|long_step_hours)$"
    r"|^trainer\.(devices|accelerator|strategy|num_nodes|enable_progress_bar|log_every_n_steps)$"
    r"|^encoder\..*\.(path|batch_size|dtype)$"
)
TAGGED_GROUPS = ("model", "data", "encoder/visual", "encoder/text", "fusion", "loss", "trainer")
MAX_NAME = 120  # characters of a folder name built from overrides (file names stop at 255)
MAX_ARTIFACT = 128  # W&B refuses longer artifact names (a prefix plus a sweep job's folder)


def choices() -> dict[str, str]:
    """Config-group choices of the running Hydra job; empty outside a Hydra app."""
    if not HydraConfig.initialized():
        return {}
    return {
        str(k): str(v)
        for k, v in HydraConfig.get().runtime.choices.items()
        if not str(k).startswith("hydra") and v is not None
    }


def setting_overrides() -> list[str]:
    """The job's ``key=value`` overrides of single settings that change what it computes
    (group choices are named separately; infrastructure is left out)."""
    if not HydraConfig.initialized():
        return []
    picked = choices()
    out = []
    for item in HydraConfig.get().overrides.task:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if sep and key not in picked and "@" not in key and not INFRA_OVERRIDE.search(key):
            out.append(f"{key}={value}")
    return out


def encoders(picked: dict[str, str]) -> str:
    """``visual+text`` as composed (``none`` for a switched-off side)."""
    return f"{picked.get('encoder/visual', 'none')}+{picked.get('encoder/text', 'none')}"


def describe(picked: dict[str, str]) -> list[str]:
    """The parts that name a training run: encoders, fusion and loss of multirec's model;
    the model and its encoders for the field's models; nothing for a job that trains none."""
    model = picked.get("model")
    if model is None:
        return []
    if model == MULTIREC_MODEL:
        return [encoders(picked), picked.get("fusion", "?"), picked.get("loss", "?")]
    return [model, encoders(picked)]


def run_name(sep: str = "-", *, _root_: DictConfig) -> str:
    """``effnet+sbert-attention-bce-model.use_ids=false-seed1``: what ran, for W&B and folders."""
    parts = describe(choices())
    if not parts:  # a job that trains nothing (report): its overrides are paths
        return str(HydraConfig.get().job.name)
    return sep.join([*parts, *setting_overrides(), f"seed{_root_.get('seed')}"])


def folder_name(*, _root_: DictConfig) -> str:
    """:func:`run_name` as a file name that a ``ckpt_path=`` override can hold: no path
    separators, and none of Hydra's ``=`` or ``,`` (``model.use_ids-false``); bounded length."""
    name = re.sub(r"[^A-Za-z0-9._+@-]", "-", run_name("_", _root_=_root_))
    return name if len(name) <= MAX_NAME else f"{name[: MAX_NAME - 1]}~"


def run_tags(*, _root_: DictConfig) -> ListConfig:
    """``group:choice`` of the groups that matter; for training, the seed and every setting
    override."""
    picked = choices()
    tags = [f"{g}:{picked[g]}" for g in TAGGED_GROUPS if g in picked]
    if describe(picked):
        tags += [*setting_overrides(), f"seed:{_root_.get('seed')}"]
    return ListConfig([t[:64] for t in tags])  # W&B's limit per tag


def run_group(*, _root_: DictConfig) -> str:
    """The task (the entry point's name where it has none) for a single run; the task and the
    sweep's folder for a sweep: one group per sweep."""
    task = str(_root_.get("task_name") or HydraConfig.get().job.name)
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return task
    return f"{task}-{Path(str(HydraConfig.get().sweep.dir)).name}"


for _name, _fn in (
    ("run_name", run_name),
    ("folder_name", folder_name),
    ("run_tags", run_tags),
    ("run_group", run_group),
):
    OmegaConf.register_new_resolver(_name, _fn, replace=True)


# -- the loggers ----------------------------------------------------------------------------
def run_config(cfg: DictConfig) -> dict[str, Any]:
    """Everything the job ran with, resolved: data, the composed encoders, model, datamodule,
    trainer, seed, ... and the group choices that composed it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    return {**config, "choices": choices()}


def _wandb_loggers(loggers: Sequence[Any]) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def log_files(loggers: Sequence[Any], name: str, kind: str, files: Sequence[Path]) -> None:
    """Attach ``files`` to each W&B run as one artifact (``name`` of type ``kind``)."""
    existing = [f for f in files if Path(f).is_file()]
    for lg in _wandb_loggers(loggers) if existing else []:
        import wandb

        safe = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:MAX_ARTIFACT]
        artifact = wandb.Artifact(safe, type=kind)
        for f in existing:
            artifact.add_file(str(f))
        lg.experiment.log_artifact(artifact)


@contextmanager
def one_run_per_job(loggers: Sequence[Any]) -> Iterator[None]:
    """Finish the job's W&B run when the job ends (exit code 1 when it failed)."""
    ok = False
    try:
        yield
        ok = True
    finally:
        if _wandb_loggers(loggers):
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=0 if ok else 1)
