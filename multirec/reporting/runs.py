"""Find finished runs under a folder; merge them into one entry per (configuration, seed).

Two kinds of run directory hold a ``metrics.json`` (flat metrics) next to an
``evaluation.json`` (the evaluator's provenance plus the run's own record):

* a training run of ``multirec.train`` -- ``{"kind": "model", "choices": {...}, "seed": ...,
  "dataset": {"fingerprint": ...}, "best_checkpoint": ..., "metrics": {...}}`` (a
  ``metrics.json`` holding that record itself, with nested metrics, is read the same way)
  -- identified by its config-group choices (encoder pair, fusion, loss, ...) and by every
  setting that can change its results, read from the composed config Hydra saved in
  ``.hydra/config.yaml`` (so values an experiment file sets count too; paths, logging,
  devices and the seed do not); without that file, by the plain ``key=value`` overrides;
* an evaluation of ``multirec.evaluate`` -- ``{"model": ..., "source": {"baseline": {...}}
  or {"ckpt_path": ...}, "protocol": {...}, "dataset": {...}, "metrics": {...}}``.
  A baseline is identified by its name and settings other than ``seed``; an evaluated
  checkpoint is attached to the training run that produced it (say, the full-ranking
  scores of a model trained under the sampled protocol).

A training run of multirec's own model (``model=multimodal``) is named by its encoder pair;
one of the field's models (VBPR, LightGCN, FREEDOM, ...) by the model. A run whose settings
``multirec.tune`` chose holds ``tuning.json`` (the budget, the space and the choice): it is
a row of its own, marked as tuned.

Per-list results (``lists-{split}-{protocol}.parquet``, written by the evaluator) are
found next to either file. A training run also scores a few baselines on its test
candidates (``comparison.json``, no per-list results); those fill in a baseline's row
for a protocol only where no ``multirec.evaluate`` result of that baseline exists, so
``make sweep && make table`` has baseline rows even before ``make baselines``.

One configuration and seed may appear in several directories -- a baseline evaluated
once per protocol, a sweep run twice -- so the entries are merged oldest first: the
newest result of a metric wins and every replaced one is reported. Nothing here reads
the global config or the working directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

RUN_FILE = "metrics.json"
EVAL_FILE = "evaluation.json"
COMPARISON_FILE = "comparison.json"
COMPARE_DIR = "compare"  # per-list results of the compared baselines, one folder each
TUNING_FILE = "tuning.json"
MULTIREC_MODEL = "multimodal"  # the `model` choice of multirec's own recommender
LIST_FILE = re.compile(r"lists-(?P<split>[a-z]+)-(?P<protocol>[a-z_]+)\.parquet")
# Folders that never hold runs but may hold many files (covers, checkpoints, W&B stores).
SKIP_DIRS = frozenset({"covers", "wandb", "checkpoints", "candidates", "csv"})
# Choices and overrides that change how a run executes or logs, not what it computes.
# (``baseline@compare.*`` are the baselines a training run prints beside the model;
# ``search`` is the space multirec.tune searches, which a model's config pulls in.)
INFRA_GROUPS = (
    "paths",
    "logger",
    "trainer",
    "callbacks",
    "experiment",
    "hydra",
    "baseline",
    "search",
)
INFRA_KEYS = (
    "seed",
    "ckpt_path",
    "task_name",
    "device",
    "test",
    "optimized_metric",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.num_nodes",
)
INFRA_PREFIXES = ("paths.", "logger.", "callbacks.", "hydra.", "experiment")
# Settings of a saved composed config that do not change what a run computes. The data
# settings are covered by the prepared dataset's fingerprint.
INFRA_SETTINGS = re.compile(
    r"^(paths|logger|hydra|compare|search|data|seed|task_name|ckpt_path|device|test|datamodule\.seed)(\.|$)"
    r"|^trainer\.(devices|accelerator|strategy|num_nodes|default_root_dir|enable_progress_bar|enable_model_summary|log_every_n_steps)$"
    r"|^callbacks\..*\.(dirpath|filename)$|^encoder\..*\.batch_size$"
)

VISUAL_NAMES = {"clip": "CLIP", "dino": "DINO", "resnet": "ResNet", "effnet": "EffNet"}
TEXT_NAMES = {"sbert": "SBERT", "bert": "BERT"}


@dataclass
class Entry:
    """Results of one configuration with one seed (possibly gathered from several runs)."""

    kind: str  # "model" or "baseline"
    label: str  # row label before disambiguation, e.g. "CLIP+SBERT", "MostPopular"
    config: dict[str, str]  # identifies the configuration across seeds; names it in tables
    seed: int
    dataset: str  # prepared dataset fingerprint
    metrics: dict[str, float] = field(default_factory=dict)
    lists: dict[tuple[str, str], Path] = field(default_factory=dict)  # (split, protocol) -> parquet
    protocols: dict[str, dict] = field(default_factory=dict)  # protocol name -> its settings
    checkpoint: Path | None = None
    run_dirs: list[Path] = field(default_factory=list)
    finished: float = 0.0  # mtime of the newest metrics file
    settings: dict[str, str] = field(
        default_factory=dict
    )  # the rest of the composed config (identity only)
    tuning: dict | None = None  # tuning.json of multirec.tune, when it chose the settings

    @property
    def config_key(self) -> tuple:
        """The configuration, seed excluded (rows of a table)."""
        return (
            self.kind,
            tuple(sorted(self.config.items())),
            tuple(sorted(self.settings.items())),
            self.tuning is not None,
        )

    @property
    def field_model(self) -> bool:
        """A model of the field (VBPR, LightGCN, ...), not multirec's own."""
        return self.kind == "model" and self.config.get("model", MULTIREC_MODEL) != MULTIREC_MODEL

    @property
    def key(self) -> tuple:
        return (*self.config_key, self.seed, self.dataset)

    @property
    def encoders(self) -> tuple[str, str]:
        """(visual, text) encoder names of a model entry; ``none`` for a switched-off side."""
        return self.config.get("encoder/visual", "none"), self.config.get("encoder/text", "none")


@dataclass
class Collection:
    """Every merged entry found under a folder, and what was skipped or replaced on the way."""

    root: Path
    entries: list[Entry]
    notes: list[str]


def pair_label(visual: str, text: str) -> str:
    """``CLIP+SBERT``; a single side reads ``SBERT (text-only)`` / ``DINO (visual-only)``."""
    v, t = VISUAL_NAMES.get(visual, visual), TEXT_NAMES.get(text, text)
    if visual == "none" and text == "none":
        return "no encoder"
    if visual == "none":
        return f"{t} (text-only)"
    if text == "none":
        return f"{v} (visual-only)"
    return f"{v}+{t}"


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` holding a ``metrics.json`` (sorted; heavy folders pruned)."""
    found = []
    for here, dirs, files in os.walk(root):
        if RUN_FILE in files:
            found.append(Path(here))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
    return sorted(found)


def collect(root: Path | str) -> Collection:
    """Read every run under ``root`` and merge them into entries (see the module docstring)."""
    root = Path(root)
    notes: list[str] = []
    found: list[Entry] = []
    comparisons: list[Entry] = []
    checkpoint_evals: list[tuple[Path, Entry]] = []
    for run_dir in find_run_dirs(root):
        try:
            parsed = _read_run(run_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"skipped {run_dir}: unreadable results ({type(exc).__name__}: {exc})")
            continue
        if parsed is None:
            notes.append(
                f"skipped {run_dir}: {RUN_FILE} is neither a training run nor an evaluation"
            )
        elif isinstance(parsed, tuple):
            checkpoint_evals.append(parsed)
        else:
            found.append(parsed)
            if parsed.kind == "model":
                comparisons += _comparisons(run_dir, parsed)
    entries = _merge(found, notes)
    entries += _missing_baselines(entries, _merge(comparisons, []))
    by_checkpoint = {e.checkpoint.resolve(): e for e in entries if e.checkpoint is not None}
    for ckpt, ev in checkpoint_evals:
        target = by_checkpoint.get(ckpt.resolve())
        if target is None:
            notes.append(
                f"skipped {ev.run_dirs[0]}: it evaluates {ckpt}, whose training run is not under {root}"
            )
            continue
        for k, v in ev.metrics.items():
            target.metrics.setdefault(k, v)
        for k, v in ev.lists.items():
            target.lists.setdefault(k, v)
        target.protocols.update(ev.protocols)
        target.run_dirs.extend(ev.run_dirs)
    return Collection(root, entries, notes)


def _read_run(run_dir: Path) -> Entry | tuple[Path, Entry] | None:
    data = json.loads((run_dir / RUN_FILE).read_text())
    finished = (run_dir / RUN_FILE).stat().st_mtime
    lists = _list_files(run_dir)
    if not (isinstance(data, dict) and "kind" in data):
        if not (run_dir / EVAL_FILE).is_file():
            return None
        data = json.loads((run_dir / EVAL_FILE).read_text())
    dataset = data["dataset"]
    fp = str(dataset["fingerprint"] if isinstance(dataset, dict) else dataset)
    metrics = _floats(data["metrics"])
    tuning_path = run_dir / TUNING_FILE
    tuning = json.loads(tuning_path.read_text()) if tuning_path.is_file() else None
    if data.get("kind") == "model":
        if data.get("optimized_metric") and data.get("best_valid") is not None:
            metrics.setdefault(str(data["optimized_metric"]), float(data["best_valid"]))
        choices = {str(k): str(v) for k, v in (data.get("choices") or {}).items()}
        path = run_dir / ".hydra" / "config.yaml"
        composed = yaml.safe_load(path.read_text()) if path.is_file() else None
        config = _model_config(choices, [] if composed else _overrides(run_dir))
        ckpt = data.get("best_checkpoint") or None
        entry = Entry(
            kind="model",
            label=pair_label(config["encoder/visual"], config["encoder/text"]),
            config=config,
            seed=int(data["seed"]),
            dataset=fp,
            metrics=metrics,
            lists=lists,
            protocols=dict((composed or {}).get("protocols") or {}),
            checkpoint=Path(ckpt) if ckpt else None,
            run_dirs=[run_dir],
            finished=finished,
            settings=_settings(composed) if composed else {},
            tuning=tuning,
        )
        return replace(entry, label=str(data["model"])) if entry.field_model else entry
    if "source" not in data:
        return None
    ev = data
    protocol = dict(ev.get("protocol") or {})
    entry = Entry(
        kind="baseline",
        label=str(ev["model"]),
        config={},
        seed=0,
        dataset=fp,
        metrics=metrics,
        lists=lists,
        protocols={k.split("/")[1]: protocol for k in metrics if k.count("/") == 2},
        run_dirs=[run_dir],
        finished=finished,
        tuning=tuning,
    )
    source = ev["source"]
    if "ckpt_path" in source:
        return Path(source["ckpt_path"]), entry
    settings = dict(source["baseline"])
    config = {"baseline": str(ev["model"])}
    config.update({k: json.dumps(v) for k, v in settings.items() if k not in ("_target_", "seed")})
    return replace(entry, config=config, seed=int(settings.get("seed", 0)))


def _comparisons(run_dir: Path, run: Entry) -> list[Entry]:
    """Baselines a training run scored on its own test candidates (``comparison.json``)."""
    path = run_dir / COMPARISON_FILE
    if not path.is_file():
        return []
    return [
        Entry(
            kind="baseline",
            label=str(name),
            config={"baseline": str(name)},
            seed=0,
            dataset=run.dataset,
            metrics=_floats(metrics),
            run_dirs=[run_dir],
            finished=run.finished,
            lists=_list_files(run_dir / COMPARE_DIR / safe_name(str(name))),
        )
        for name, metrics in json.loads(path.read_text()).items()
    ]


def safe_name(name: str) -> str:
    """A model's name as a folder name (``BPR-MF`` stays, anything but ``[\\w.-]`` becomes _)."""
    return re.sub(r"[^\w.-]", "_", name)


def _protocols(metrics: dict[str, float]) -> set[str]:
    return {k.split("/")[1] for k in metrics if k.count("/") == 2}


def _missing_baselines(entries: list[Entry], comparisons: list[Entry]) -> list[Entry]:
    """Comparison results for (baseline, protocol) pairs no evaluation run covers."""
    have = {
        (e.label, e.dataset, p)
        for e in entries
        if e.kind == "baseline"
        for p in _protocols(e.metrics)
    }
    out = []
    for c in comparisons:
        metrics = {
            k: v
            for k, v in c.metrics.items()
            if k.count("/") == 2 and (c.label, c.dataset, k.split("/")[1]) not in have
        }
        if metrics:
            out.append(replace(c, metrics=metrics))
    return out


def _floats(metrics: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _list_files(run_dir: Path) -> dict[tuple[str, str], Path]:
    out = {}
    for path in run_dir.glob("lists-*.parquet"):
        m = LIST_FILE.fullmatch(path.name)
        if m:
            out[(m["split"], m["protocol"])] = path
    return out


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def _settings(node: object, prefix: str = "") -> dict[str, str]:
    """The composed config flattened to ``dotted.key: value`` strings, infrastructure dropped."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for k, v in node.items():
            out.update(_settings(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    return {} if INFRA_SETTINGS.search(key) else {key: json.dumps(node)}


def _model_config(choices: dict[str, str], overrides: list[str]) -> dict[str, str]:
    """Choices and plain overrides that determine what a training run computes."""
    visual, text = choices.get("encoder/visual"), choices.get("encoder/text")
    if visual is None or text is None:  # only the pair's name is known
        visual, _, text = choices.get("encoder", "").partition("_")
    config = {
        k: v
        for k, v in choices.items()
        if k != "encoder" and not k.startswith("encoder/") and _group(k) not in INFRA_GROUPS
    }
    config["encoder/visual"] = visual or "none"
    config["encoder/text"] = text or "none"
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if (
            not sep
            or key in choices
            or "@" in key
            or key in INFRA_KEYS
            or key.startswith(INFRA_PREFIXES)
        ):
            continue  # group choices are in `choices`; packaged groups are the compared baselines
        config[key] = value
    return config


def _group(key: str) -> str:
    """Top-level config group of a choice or override key (``baseline@compare.random`` -> ``baseline``)."""
    return key.split("/")[0].split("@")[0].split(".")[0]


def _merge(found: list[Entry], notes: list[str]) -> list[Entry]:
    """One entry per (kind, configuration, seed, dataset); newer results replace older ones."""
    merged: dict[tuple, Entry] = {}
    for run in sorted(found, key=lambda e: e.finished):
        have = merged.get(run.key)
        if have is None:
            merged[run.key] = replace(
                run,
                metrics=dict(run.metrics),
                lists=dict(run.lists),
                protocols=dict(run.protocols),
                run_dirs=list(run.run_dirs),
            )
            continue
        replaced = sorted(set(have.metrics) & set(run.metrics))
        if replaced:
            notes.append(
                f"{run.run_dirs[0]} replaces older results of the same configuration and seed "
                f"({len(replaced)} metrics, e.g. {replaced[0]}) from {', '.join(map(str, have.run_dirs))}"
            )
        have.metrics.update(run.metrics)
        have.lists.update(run.lists)
        have.protocols.update(run.protocols)
        have.run_dirs.extend(run.run_dirs)
        have.checkpoint = run.checkpoint or have.checkpoint
        have.finished = run.finished
    return list(merged.values())
