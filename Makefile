# prsgd: `make help` lists the targets. Everything runs in a local virtual environment that the
# first target to need it creates (torch, the package, and Horovod built by our script).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
STAMP := $(VENV)/.prsgd-installed
NP ?= 2
DATA ?=
SHARED_DATA := ../shared/data/cifar10-jpeg
export PYTHONPATH := $(CURDIR)/src
export PATH := $(VENV_ABS)/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install test smoke train clean bench

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/install_horovod.sh scripts/patches/horovod-0.28.1.patch
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	bash scripts/install_horovod.sh $(PY)
	$(VENV_ABS)/bin/horovodrun --check-build | grep -q "\[X\] PyTorch"
	touch $@

install: $(STAMP)  ## create .venv: torch, prsgd, Horovod (cached build)

test: $(STAMP)  ## run the test suite (unit + real horovodrun -np 2 --gloo tests)
	$(PY) -m pytest -q

smoke: $(STAMP)  ## a few-second 2-rank training run on synthetic data
	horovodrun -np 2 --gloo $(PY) -m prsgd.train --preset smoke --dataset synthetic --interval 4 --out runs

train: $(STAMP)  ## the main job: NP ranks (default 2), demo preset, shared JPEG CIFAR-10 or DATA=
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	if [ ! -e "$$data" ]; then echo "no data: set DATA=PATH (ImageFolder tree or zip of CIFAR-10)"; exit 2; fi; \
	horovodrun -np $(NP) --gloo $(PY) -m prsgd.train --preset demo --dataset imagefolder --data "$$data" --interval 4 --out runs $(ARGS)

bench: $(STAMP)  ## step throughput side by side (plain Horovod-example loop, ours, packed); JSON in results/bench/
	$(PY) scripts/bench.py $(ARGS)

clean:  ## remove the virtual environment and local runs
	rm -rf $(VENV) runs
