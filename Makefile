# nmt — the pipeline as file targets: a finished stage is skipped, a changed input reruns what
# follows it, and an interrupted `make train` resumes training from runs/<name>/last.
#
#   make train           venv → prepare → tokenize → train → evaluate (report.md / report.json)
#   make test            the test suite (what CI runs)
#   make eval            re-evaluate runs/<name>/best
#   make bench           speed benchmark (bench-peers: side by side; bench-quality: BLEU per budget)
#   make NAME=tiny train another experiment: configs/<NAME>.yaml
#
# Settings per stage are stamped into runs/<name>/config/<section>.json, rewritten only when they
# change, so editing decode.beam re-evaluates without retraining; editing model.* reruns training,
# which refuses to resume checkpoints of other settings (delete runs/<name> or rename the run).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
NAME ?= bible-es-en
CONFIG := configs/$(NAME).yaml
RUN := runs/$(NAME)
STAMPS := $(RUN)/config

.PHONY: all venv train eval test bench FORCE
all: train

# TORCH_INDEX: where pip takes torch from. Unset, pip's own configuration decides (a CPU wheel where
# one is served, as on our machines; from PyPI on Linux, the CUDA build and its several GB of CUDA
# packages). make train TORCH_INDEX=https://download.pytorch.org/whl/cpu takes PyTorch's CPU build.
TORCH_INDEX ?=

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) )torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Stamps: each file only changes when its section of the config changes (data.json also when a
# local data file does: its size and modification time are in it). Once the environment exists,
# the stamps that would change are found while this Makefile is read (nothing written), and only
# they are remade: make, and a dry run (make -n), rerun exactly the stages after them. Before, or
# when the config has an error (said by the rule), every stamp is remade, and a dry run lists
# every stage after them.
PIPELINE_GOALS := all train eval report $(RUN)/%
# The pipeline's goals need configs/$(NAME).yaml: said in one line while this Makefile is read (make's
# own words were "No rule to make target"); a name with a wildcard matches no file of that name.
ifneq ($(filter $(PIPELINE_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(words $(NAME)),1)
$(error NAME="$(NAME)": make NAME=x needs one name, without spaces (configs/x.yaml))
endif
CONFIGS := $(sort $(basename $(notdir $(wildcard configs/*.yaml))))
ifneq ($(wildcard $(CONFIG)),$(CONFIG))
$(error $(CONFIG) not found: make NAME=x reads configs/x.yaml (here: $(CONFIGS)))
endif
endif
ifneq ($(and $(wildcard $(VENV)/.installed),$(filter $(PIPELINE_GOALS),$(or $(MAKECMDGOALS),all))),)
CHECK := $(shell $(PY) pipelines/stamp_config.py --run $(RUN) --check $(CONFIG) 2>/dev/null && echo checked)
endif
ifeq ($(lastword $(CHECK)),checked)
CHANGED := $(filter-out checked,$(CHECK))
ifneq ($(CHANGED),)
$(CHANGED): $(STAMPS)/.write ;

$(STAMPS)/.write: FORCE | $(VENV)/.installed
	$(PY) pipelines/stamp_config.py --run $(RUN) $(CONFIG)
endif
else
$(STAMPS)/resolved.json: $(CONFIG) FORCE | $(VENV)/.installed
	$(PY) pipelines/stamp_config.py --run $(RUN) $(CONFIG)

$(STAMPS)/%.json: $(STAMPS)/resolved.json ;
endif

$(RUN)/data/stats.json: $(STAMPS)/data.json | $(VENV)/.installed
	$(PY) pipelines/prepare_data.py $(CONFIG)

$(RUN)/tokenizer/tokenizer.json: $(RUN)/data/stats.json $(STAMPS)/tokenizer.json | $(VENV)/.installed
	$(PY) pipelines/train_tokenizer.py $(CONFIG)

$(RUN)/train_summary.json: $(RUN)/tokenizer/tokenizer.json $(STAMPS)/model.json $(STAMPS)/train.json | $(VENV)/.installed
	$(PY) pipelines/train_model.py $(CONFIG)

$(RUN)/report.json: $(RUN)/train_summary.json $(STAMPS)/decode.json | $(VENV)/.installed
	$(PY) pipelines/evaluate.py $(CONFIG)

train: $(RUN)/report.json $(STAMPS)/resolved.json
	@cat $(RUN)/report.md | head -20

eval: $(RUN)/train_summary.json $(STAMPS)/decode.json $(STAMPS)/resolved.json  # its stamp written: no second evaluation
	$(PY) pipelines/evaluate.py $(CONFIG)

# make report: runs/<name>/report/report.html (self-contained; + report.md, report.json, figures/,
# hyps/) from runs/<name>/best. About 4 min on 2 idle CPU cores for the default model (the beam
# sweep is capped at 500 test lines). More checkpoints or other knobs: nmt report --help.
.PHONY: report
report: $(RUN)/report/report.html $(STAMPS)/resolved.json

$(RUN)/report/report.html: $(RUN)/train_summary.json $(STAMPS)/decode.json | $(VENV)/.installed
	$(PY) pipelines/report.py $(CONFIG)

# make bench: nmt's speed on the default model and the Bible data (training tokens/s, GFLOP/s
# against the matmul peak, greedy and beam-5 decoding, peak memory); make bench-peers: the same
# measurements of fairseq, OpenNMT-py and JoeyNMT, each installed once into its own venv under
# benchmarks/.peers/, and a table of nmt / peer ratios. Not part of make test; about 20 min on
# 2 cores; results in benchmarks/results/. What is measured and matched: benchmarks/README.md.
# make bench-quality: quality per unit of time — nmt and each peer train for the same wall-clock
# budget (MINUTES, default 20) and translate the test split with beam 5; sacreBLEU scores all.
# About 4 × MINUTES + 15 min on 2 cores; results in benchmarks/results/<date>-<machine>-quality.*
# make bench-decode (after bench-quality): those equally trained models decode the test split,
# greedy and beam 5, in interleaved rounds; about 15 min; results in …-decode-trained.*
# make bench-gpu: the same measurements on a CUDA GPU, in one process (benchmarks/gpu.py: training
# levers, decoding at batch 64 and 1000, the GPU's matmul peak). It runs GPU_PYTHON (default
# python3), an environment with a CUDA build of PyTorch and nmt installed, not .venv, whose
# PyTorch is the pinned wheel, a CPU build on our machines (README: "On a GPU").
GPU_PYTHON ?= python3
.PHONY: bench-peers bench-quality bench-decode bench-gpu
MINUTES ?= 20
bench: $(VENV)/.installed
	$(PY) benchmarks/bench.py

bench-peers: $(VENV)/.installed
	TORCH_INDEX=$(TORCH_INDEX) bash benchmarks/peers/setup.sh || echo "no peer could be installed; measuring nmt alone"
	$(PY) benchmarks/bench.py --peers all --steps 50 --decode-sentences 100 --rounds 2

bench-quality: $(VENV)/.installed
	TORCH_INDEX=$(TORCH_INDEX) bash benchmarks/peers/setup.sh || echo "no peer could be installed; measuring nmt alone"
	$(PY) benchmarks/quality.py --minutes $(MINUTES) --peers all

bench-decode: $(VENV)/.installed
	$(PY) benchmarks/decode_trained.py --peers all --rounds 2

bench-gpu:
	$(GPU_PYTHON) benchmarks/gpu.py

test: $(VENV)/.installed
	HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

FORCE:
