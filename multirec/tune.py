"""``python -m multirec.tune [models=lightgcn,itemknn] [out=DIR] [key=value ...]`` (``make tune``)

A fair contest: every model and baseline gets the same tuning budget, is selected on the
validation split only, and only its chosen settings are tested. Per model or baseline, the
entry points themselves run, each in its own process:

1. **search** -- an Optuna sweep (``experiment=tune`` of ``multirec.train`` for a model, of
   ``multirec.evaluate`` for a baseline) of the space its config declares
   (``conf/{model,baseline}/search/``): ``tune.trials`` trials of a seeded sampler, each
   scored by validation full-ranking NDCG@10, and the configured settings as one more trial
   (the better of the two is chosen, so tuning never ends below the defaults);
2. **final** -- the best settings once per seed of ``tune.seeds`` (a baseline without a
   ``seed`` setting once), tested under both protocols; ``tuning.json`` beside each run
   records the budget and the choice for the report. Random and MostPopular have an empty
   space and run with their settings;
3. **report** -- ``multirec.report`` over the final runs into ``out/report``: the tuned table.

Every other ``key=value`` goes to each step whose config has its top-level key (``data=tiny``
to all, ``trainer.max_epochs=1`` to multirec.train, ``tune.trials=2`` to the searches only);
one that no step has is refused before any work starts.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multirec.cli import user_errors
from multirec.config import project_root
from multirec.errors import ConfigError, MultirecError
from multirec.io import atomic_write_json
from multirec.reporting.runs import TUNING_FILE, find_run_dirs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("baseline", "model")  # the order of the contest: baselines first
# Set by the pipeline for each step; passing them as well would contradict it.
RESERVED = frozenset(
    {"model", "baseline", "experiment", "seed", "split", "protocol", "test", "task_name"}
    | {"runs", "out", "hydra.sweep.dir", "hydra.mode"}
)
# step -> (entry point, overrides that make its config); a user override goes to the steps
# whose config has its top-level key
STEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "search-model": ("train", ("experiment=tune",)),
    "final-model": ("train", ()),
    "search-baseline": ("evaluate", ("+experiment=tune",)),
    "final-baseline": ("evaluate", ()),
    "report": ("report", ()),
}


@dataclass(frozen=True)
class Target:
    """A model (``conf/model/<name>.yaml``) or a baseline (``conf/baseline/<name>.yaml``)."""

    name: str
    group: str

    @property
    def app(self) -> str:
        return "train" if self.group == "model" else "evaluate"

    def search_args(self, protocol: str = "full") -> list[str]:
        """What makes its entry point a search; a baseline is scored under ``protocol``."""
        if self.group == "model":
            return ["experiment=tune", f"model={self.name}"]
        return ["+experiment=tune", f"baseline={self.name}", "split=valid", f"protocol={protocol}"]


@dataclass(frozen=True)
class Budget:
    """What every search of one contest spends and selects on (the report states it)."""

    trials: int
    sampler: str
    sampler_seed: int
    metric: str  # e.g. valid/full/ndcg@10
    seeds: tuple[int, ...]  # the final runs' seeds


def targets(names: list[str] | None) -> list[Target]:
    """The named models and baselines (all of them for ``None``); an unknown name is refused."""
    known = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in GROUPS}
    group_of = {n: g for g in GROUPS for n in known[g]}
    for name in names or []:
        if name not in group_of:
            raise ConfigError(
                f"unknown model or baseline {name!r}; models: {', '.join(known['model'])}; "
                f"baselines: {', '.join(known['baseline'])}"
            )
    return [Target(n, group_of[n]) for n in names or [n for g in GROUPS for n in known[g]]]


def compose_config(app: str, overrides: list[str]) -> DictConfig:
    """``app``'s composed config (``conf/<app>.yaml``), a composition error in one line."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=app, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ConfigError(
            f"multirec.{app} {' '.join(overrides)}: {lines[0] if lines else exc}"
        ) from None


def override_key(item: str) -> str:
    """The key a Hydra override sets (``+a.b=1``, ``~a.b`` -> ``a.b``)."""
    return item.lstrip("+~").partition("=")[0]


def unless_given(given: list[str], defaults: dict[str, Any]) -> list[str]:
    """``key=value`` for each of ``defaults`` that the overrides ``given`` leave unset."""
    keys = {override_key(item) for item in given}
    return [f"{k}={v}" for k, v in defaults.items() if k not in keys]


def route(overrides: list[str], configs: dict[str, DictConfig]) -> dict[str, list[str]]:
    """Each step's share of the user's overrides: those whose top-level key its config has."""
    routed: dict[str, list[str]] = {step: [] for step in configs}
    for item in overrides:
        key = override_key(item)
        if key in RESERVED:
            raise ConfigError(
                f"{item}: multirec.tune sets {key} itself (models=... picks what is tuned, "
                "tune.seeds the final runs' seeds)"
            )
        top = re.split(r"[./@]", key, maxsplit=1)[0]
        steps = [step for step, cfg in configs.items() if top in cfg]
        if not steps:
            raise ConfigError(
                f"{item}: no step of the tuning has a {top!r} setting "
                "(multirec.train, multirec.evaluate, multirec.report)"
            )
        for step in steps:
            routed[step].append(item)
    return routed


def budget_of(cfg: DictConfig) -> Budget:
    """The budget a composed search config spends; selecting on anything but validation is refused."""
    metric = str(cfg.optimized_metric)
    if not metric.startswith("valid/"):
        raise ConfigError(
            f"optimized_metric={metric}: tuning selects on the validation split only "
            "(valid/<protocol>/<metric>); the test split is scored once, after the search"
        )
    return Budget(
        trials=int(cfg.tune.trials),
        sampler=str(cfg.hydra.sweeper.sampler._target_).rsplit(".", 1)[-1],
        sampler_seed=int(cfg.tune.seed),
        metric=metric,
        seeds=tuple(int(s) for s in cfg.tune.seeds),
    )


def quote(path: Path) -> str:
    """``path`` as a Hydra override value, quoted where it holds more than a plain path."""
    text = str(path)
    if re.fullmatch(r"[\w./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch(app: str, args: list[str]) -> None:
    """Run ``python -m multirec.<app> args`` in its own process, its output on the console."""
    cmd = [sys.executable, "-m", f"multirec.{app}", *args]
    print("+ " + shlex.join(cmd), flush=True)
    code = subprocess.run(cmd, check=False).returncode
    if code:
        raise MultirecError(
            f"multirec.{app} {' '.join(args[:3])} ... exited with status {code} (its output is above)"
        )


def search(target: Target, cfg: DictConfig, args: list[str], folder: Path) -> dict[str, Any]:
    """Run the target's Optuna sweep into ``folder``, and its configured settings as one more
    trial (``folder/defaults``), so that tuning never ends below what the config ships with;
    returns the better of the two: its settings (empty for the defaults) and validation value."""
    protocol = budget_of(cfg).metric.split("/")[1]  # a baseline is scored as the models are
    found = {}
    for where, extra in (
        (folder, []),
        (folder / "defaults", ["hydra.sweeper.n_trials=1", "hydra.sweeper.params=null"]),
    ):
        launch(
            target.app,
            [*target.search_args(protocol), *args, *extra, f"hydra.sweep.dir={quote(where)}"],
        )
        result = yaml.safe_load((where / "optimization_results.yaml").read_text())
        found[where] = (float(result["best_value"]), dict(result["best_params"]))
    value, params = max(found.values(), key=lambda vp: vp[0])
    return {"best_params": params, "best_value": value, "defaults_trial": True}


def final(
    target: Target, cfg: DictConfig, best: dict[str, Any], args: list[str], folder: Path
) -> list[int]:
    """Train or fit the chosen settings once per seed and test them under every protocol;
    returns the seeds (none for a baseline without a ``seed`` setting: it is deterministic)."""
    seeds = list(budget_of(cfg).seeds)
    chosen = [f"{k}={v}" for k, v in best.items()]
    user = {override_key(item) for item in args}
    if target.group == "model":
        # the final runs stop early and keep their best epoch as the trials did
        own = unless_given(args, {"valid_protocol": cfg.valid_protocol})
        # ~compare: the baselines enter the table as tuned runs of their own
        argv = [f"model={target.name}", *chosen, *own, "task_name=tuned", "~compare"]
        seed_key = "seed"
    else:
        argv = [f"baseline={target.name}", *chosen, "split=test", "protocol=sampled,full"]
        seed_key = "baseline.seed"
        if "seed" not in cfg.baseline or seed_key in user:
            seeds = []
    argv += [f"{seed_key}={','.join(map(str, seeds))}"] if seeds else []
    launch(target.app, ["-m", *argv, *args, f"hydra.sweep.dir={quote(folder)}"])
    return seeds


def space(cfg: DictConfig, target: Target) -> dict[str, Any]:
    """The space ``target``'s config declares (``search.model`` or ``search.baseline``; a
    model run also composes its compared baselines' spaces, which it never searches)."""
    node = OmegaConf.select(cfg, f"search.{target.group}")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def record(
    target: Target, cfg: DictConfig, best: dict[str, Any], seeds: list[int], folder: Path
) -> None:
    """Write ``tuning.json`` beside every final run: the budget, the space and the choice."""
    budget = budget_of(cfg)
    info = {
        "name": target.name,
        "group": target.group,
        "trials": budget.trials,
        "sampler": budget.sampler,
        "sampler_seed": budget.sampler_seed,
        "metric": budget.metric,
        "seeds": seeds,
        "space": space(cfg, target),
        **best,
    }
    for run_dir in find_run_dirs(folder):
        atomic_write_json(run_dir / TUNING_FILE, info)


def tune(names: list[str] | None, out: Path, overrides: list[str]) -> Path:
    """The whole contest (see the module docstring); returns the report folder."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out} already holds results: give a new folder")
    chosen = targets(names)
    configs = {step: compose_config(app, list(base)) for step, (app, base) in STEPS.items()}
    routed = route(overrides, configs)
    # one epoch cap for every trial and final run of a neural model, wide enough that early
    # stopping, not the cap, ends them (a capped model would be flattered away)
    cap = unless_given(overrides, {"trainer.max_epochs": configs["search-model"].tune.max_epochs})
    for step in ("search-model", "final-model"):
        routed[step] = [*cap, *routed[step]]
    plans = []
    for target in chosen:  # every config composed and checked before any work
        cfg = compose_config(target.app, [*target.search_args(), *routed[f"search-{target.group}"]])
        budget_of(cfg)
        plans.append((target, cfg))
    started = time.monotonic()
    for target, cfg in plans:
        t0 = time.monotonic()
        best: dict[str, Any] = {}
        if space(cfg, target):
            best = search(
                target, cfg, routed[f"search-{target.group}"], out / "search" / target.name
            )
        else:
            print(f"{target.name} has nothing to tune: it runs with its settings", flush=True)
        folder = out / "final" / target.name
        params = best.get("best_params", {})
        seeds = final(target, cfg, params, routed[f"final-{target.group}"], folder)
        if best:
            record(target, cfg, best, seeds, folder)
        print(f"{target.name}: done in {time.monotonic() - t0:.0f} s", flush=True)
    report = out / "report"
    launch("report", [f"runs={quote(out / 'final')}", f"out={quote(report)}", *routed["report"]])
    print(f"tuned table: {report}/table2-test-*.md ({time.monotonic() - started:.0f} s in all)")
    return report


def parse(argv: list[str]) -> tuple[list[str] | None, Path, list[str]]:
    """(models=..., out=..., the other overrides) of the command line."""
    names: list[str] | None = None
    out = (
        project_root() / "outputs" / "tune" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"
    )
    rest = []
    for item in argv:
        key, sep, value = item.partition("=")
        if key == "models" and sep:
            names = [n for n in value.split(",") if n]
        elif key == "out" and sep:
            out = Path(value)
        else:
            rest.append(item)
    return names, out.resolve(), rest


@user_errors
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return
    names, out, overrides = parse(args)
    tune(names, out, overrides)


if __name__ == "__main__":
    main()
