# Large Models Workbook — `make lab` opens the course, `make test` runs every test.
# Both create .venv on first use and reinstall only when requirements.txt or pyproject.toml change.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8888
PYTEST_ARGS ?=
# Chapters executed at once by `make test` (each with cores / NOTEBOOK_JOBS threads); 1 = one after another.
NOTEBOOK_JOBS ?= 2
REQ_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Root (containers, CI) must say so explicitly to Jupyter.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
# Use the kernel installed in .venv, never a user-level "python3" kernel from elsewhere.
export JUPYTER_PREFER_ENV_PATH := 1
# The pretrained model ships in a pip package (chapter 11): never ask the Hugging Face Hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install lab test test-fast nbval strip clean bench site gpu-check

help:
	@echo "make lab        set up .venv (first time) and open the course in JupyterLab"
	@echo "make test       set up .venv (first time) and run the whole test suite"
	@echo "make test-fast  utils unit tests and notebook hygiene only (no chapter execution)"
	@echo "make nbval      execute every chapter with nbval (pytest --nbval-lax chapters/)"
	@echo "make strip      strip outputs and metadata from chapters/*.ipynb before committing"
	@echo "make bench      measure chapters and training loops, rewrite BENCHMARKS.md (not part of make test)"
	@echo "make site       render the executed chapters (build/executed/, kept by make test) into build/site/"
	@echo "make gpu-check  check the GPU path (fit in fp32/bf16/fp16, TinyGPT, torchrun/NCCL); needs no .venv"

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (Large Models Workbook)"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=chapters $(ALLOW_ROOT)

test: $(STAMP)
	WORKBOOK_NOTEBOOK_JOBS=$(NOTEBOOK_JOBS) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not notebook" $(PYTEST_ARGS)

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax chapters/ -p no:cacheprovider $(PYTEST_ARGS)

strip: $(STAMP)
	$(BIN)/nbstripout --extra-keys "metadata.language_info.version metadata.widgets" chapters/*.ipynb

clean:
	rm -rf build .pytest_cache

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

site: $(STAMP)
	$(BIN)/python tools/build_site.py

# Runs with the machine's own Python and PyTorch when there is no .venv (a bare GPU machine); report in build/.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) tools/gpu_check.py
