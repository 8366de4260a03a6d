# multirec -- every target creates and uses .venv by itself, so a fresh clone needs no earlier step.
PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Extra Hydra overrides for the main job, e.g. make train ARGS="fusion=gated"
ARGS    ?=
# The benchmarks make bench runs, each with its own key=value settings (python -m multirec.bench.X --help)
BENCH   ?= data features evaluation training two_tower models ceiling

.DEFAULT_GOAL := help
.PHONY: help setup train test lint sample-data bench baselines tune sweep ablation fusion table recommend clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: pip takes these builds from the local wheel cache where one exists
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install multirec with its dev tools

train: $(STAMP) ## the main job: sample -> prepare -> extract -> train -> test (ARGS="key=value ...")
	$(PY) -m multirec.train $(ARGS)

baselines: $(STAMP) ## every baseline under both protocols on the default data, one table
	$(PY) -m multirec.evaluate -m baseline=random,mostpop,itemknn,userknn,bprmf protocol=sampled,full $(ARGS)

tune: $(STAMP) ## every model and baseline: one Optuna budget on validation, best x 3 seeds tested, tuned table
	$(PY) -m multirec.tune $(ARGS)

sweep: $(STAMP) ## the paper's six encoder pairs x 3 seeds (needs the hub models or local paths)
	$(PY) -m multirec.train experiment=paper_encoders $(ARGS)

ablation: $(STAMP) ## full / text-only / visual-only for one encoder pair x 3 seeds
	$(PY) -m multirec.train experiment=ablation $(ARGS)

fusion: $(STAMP) ## concat / gated / attention fusion x 3 seeds
	$(PY) -m multirec.train experiment=fusion $(ARGS)

test: $(STAMP) ## run the test suite (offline, CPU)
	$(PY) -m pytest tests

lint: $(STAMP) ## ruff check and ruff format --check
	$(VENV)/bin/ruff check multirec tests
	$(VENV)/bin/ruff format --check multirec tests

sample-data: $(STAMP) ## generate the small sample and the pixelrec50k-size one under outputs/data
	$(PY) -m multirec.sample data=small
	$(PY) -m multirec.sample data=pixelrec50k

table: $(STAMP) ## Table 2/3 per protocol (md, csv, tex), significance test and figures -> outputs/report
	$(PY) -m multirec.report $(ARGS)

recommend: $(STAMP) ## top-k for one user: make recommend ARGS="ckpt_path=... user=u123"
	$(PY) -m multirec.recommend $(ARGS)

bench: $(STAMP) ## benchmarks (BENCH="training" ARGS="steps=5"; --help lists each one's keys); JSON under outputs/bench/
	for b in $(BENCH); do $(PY) -m multirec.bench.$$b $(ARGS) || exit 1; done

clean: ## remove outputs (keeps .venv)
	rm -rf outputs
