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
.PHONY: help install doctor test test-fast smoke train clean family stich reproduce reproduce-1gpu demo figure figure3-clock \
	bench bench-comm lab-up lab-down lab-figure3 lab-validation clock-validation

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/install_horovod.sh scripts/patches/horovod-0.28.1.patch src/prsgd/install/hvd_build.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	bash scripts/install_horovod.sh $(PY)
	$(VENV_ABS)/bin/horovodrun --check-build | grep -q "\[X\] PyTorch"
	touch $@

install: $(STAMP)  ## create .venv: torch, prsgd, Horovod (cached build)

doctor: $(STAMP)  ## versions, GPUs, Horovod's build and allreduce path, a real 2-rank allreduce check
	$(PY) -m prsgd.doctor

test-fast: $(STAMP)  ## the unit tier only (tests/unit: in-process, no launcher; under a minute)
	$(PY) -m pytest -q tests/unit

test: $(STAMP)  ## run the test suite (unit + real horovodrun -np 2 --gloo tests; lab tests as root)
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m prsgd.lab deps; \
	else echo "make test: not root: the lab tests (tests/test_lab.py) will be skipped"; fi
	$(PY) -m pytest -q

smoke: $(STAMP)  ## a few-second 2-rank training run on synthetic data
	$(PY) -m prsgd.supervise horovodrun -np 2 --gloo $(PY) -m prsgd.train --preset smoke --dataset synthetic --interval 4 --out runs

train: $(STAMP)  ## the main job: NP ranks (default 2), demo preset, shared JPEG CIFAR-10 or DATA=
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	if [ ! -e "$$data" ]; then echo "no data: set DATA=PATH (ImageFolder tree or zip of CIFAR-10)"; exit 2; fi; \
	$(PY) -m prsgd.supervise horovodrun -np $(NP) --gloo $(PY) -m prsgd.train --preset demo --dataset imagefolder --data "$$data" --interval 4 --out runs $(ARGS)

family: $(STAMP)  ## the family figure: every algorithm on a small real run (results/family)
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	bash scripts/family_runs.sh results/family "$$data"
stich: $(STAMP)  ## Stich's local-SGD speed-up experiment (CPU, minutes) -> results/theory/stich
	$(PY) scripts/stich_speedup.py --workers 1,2,4,8,16,32 --intervals 1,8,64 --repeats 2 --out results/theory/stich
# --- Figure 3: the sweep over intervals, then the plot (src/prsgd/experiments/sweep.py, plot.py) ----------
INTERVALS ?= 1,4,8,16,32
SEEDS ?= 0
GLOO ?= 1
SWEEP ?=
DEMO_DIR ?= results/figure3-cpu-demo
REPRODUCE_DIR ?= results/figure3-8gpu
PLOT_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))  # no Horovod needed: the venv if made, else python3
SWEEP_RUN = $(PY) scripts/sweep.py --intervals $(INTERVALS) --seeds $(SEEDS) \
	$(if $(filter 0,$(GLOO)),--no-gloo,) --data $(if $(DATA),$(DATA),auto)

reproduce: $(STAMP)  ## the paper: 8 ranks, 300 epochs, I=1,4,8,16,32, then Figure 3 -> results/figure3-8gpu/
	$(SWEEP_RUN) --np 8 --out $(REPRODUCE_DIR)/sweep -- --preset paper $(ARGS)
	$(PY) scripts/plot_figure3.py $(REPRODUCE_DIR)/sweep --out $(REPRODUCE_DIR)

# One GPU, no Horovod needed: every interval's 8 workers packed into one process (issue 4).
ONE_GPU_DIR ?= results/figure3-h100-packed
ONE_GPU_ARGS ?= --cuda-graph --precision bf16 --channels-last --deterministic false
reproduce-1gpu:  ## the paper on ONE GPU: packed backend, 5 intervals x 8 workers in one process -> results/figure3-h100-packed/
	$(PLOT_PY) scripts/sweep.py --intervals $(INTERVALS) --seeds $(SEEDS) --backend packed --pack \
		--np 8 --data $(if $(DATA),$(DATA),auto) --out $(ONE_GPU_DIR)/sweep -- --preset paper $(ONE_GPU_ARGS) $(ARGS)
	$(PLOT_PY) scripts/plot_figure3.py $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR)

demo: $(STAMP)  ## the same, scaled to ~15 min on 2 CPU cores (8 Gloo ranks, demo preset) -> results/figure3-cpu-demo/
	$(SWEEP_RUN) --np 8 --out $(DEMO_DIR)/sweep -- --preset demo $(ARGS)
	$(PY) scripts/plot_figure3.py $(DEMO_DIR)/sweep --out $(DEMO_DIR)

figure:  ## re-plot Figure 3 and the tables of SWEEP=dir (into OUT=dir, default SWEEP)
	@[ -n "$(SWEEP)" ] || { echo "usage: make figure SWEEP=path/to/sweep-dir"; exit 2; }
	$(PLOT_PY) scripts/plot_figure3.py $(SWEEP) $(if $(OUT),--out $(OUT),)
CAL := results/wallclock/calibration
figure3-clock:  ## results/figure3-h100-packed re-plotted with its modelled clock, and the time-to-target figure (issue 12)
	$(PLOT_PY) scripts/plot_figure3.py $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR) --clock $(CAL)/h100-pcie3-box.json
	$(PLOT_PY) -m prsgd.plots.clock time-to-target $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR) \
		--clock "NVLink box=$(CAL)/h100-nvlink-box.json" --clock "PCIe gen3 box=$(CAL)/h100-pcie3-box.json" \
		--clock "PCIe gen3 box, 2018 Horovod (5 ms cycle)=$(CAL)/h100-pcie3-box-cycle5ms.json" \
		--clock "25 GbE, 8 nodes=$(CAL)/h100-25gbe.json" --clock "1 GbE, 8 nodes=$(CAL)/h100-1gbe.json"

bench: $(STAMP)  ## step throughput side by side (plain Horovod-example loop, ours, packed); JSON in results/bench/
	$(PY) benchmarks/bench.py $(ARGS)

bench-comm: $(STAMP)  ## Horovod cycle time vs round latency, real Gloo ranks side by side; JSON in results/bench/
	$(PY) benchmarks/bench_comm.py $(ARGS)

# --- the lab: a cluster of network namespaces on this machine (src/prsgd/lab/cli.py; root) -------
LAB_NAME ?= lab
LAB_NODES ?= 2
LAB_SLOTS ?= 2
LAB_RATE ?= 50mbit
WALLCLOCK_DIR ?= results/wallclock
LAB_FIGURE3_DIR ?= results/figure3-lab
# Figure 3 on the lab, sized for 2 CPU cores: 2 nodes x 2 ranks (1 core per node), the demo
# subset of the shared JPEG copy (4,096 images: 32 steps per epoch per rank), 3 epochs.
LAB_ARGS ?= --preset demo --train-subset 4096 --epochs 3 --lr-milestones 2 --test-subset 500
LAB_REPEATS ?= 2
# The clock's calibration on the same lab after the runs, where prsgd.clock exists (issue 12 s.3).
LAB_CALIB = $(if $(wildcard src/prsgd/clock/model.py),CLOCK_SRC=$(CURDIR)/src CALIB_OUT=$(WALLCLOCK_DIR)/calibration/lab-$(1),)
lab-up:  ## build the lab (LAB_NODES nodes x LAB_SLOTS slots, links at LAB_RATE); needs root
	$(PLOT_PY) -m prsgd.lab up --name $(LAB_NAME) --nodes $(LAB_NODES) --slots $(LAB_SLOTS) --rate $(LAB_RATE)

lab-down:  ## remove the lab
	$(PLOT_PY) -m prsgd.lab down --name $(LAB_NAME)

lab-figure3: $(STAMP)  ## measured Figure 3 on the lab: real ranks on 2 nodes over a LAB_RATE link -> results/figure3-lab/
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) $(call LAB_CALIB,shaped-$(LAB_RATE)) bash scripts/lab_sweep.sh $(LAB_FIGURE3_DIR) $(LAB_RATE) $(INTERVALS) $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/plot_figure3.py $(LAB_FIGURE3_DIR)/sweep --out $(LAB_FIGURE3_DIR)
	$(PY) scripts/lab_levels.py $(LAB_FIGURE3_DIR)

lab-validation: $(STAMP)  ## the clock's validation runs on the lab, unshaped link (the shaped ones: lab-figure3)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) $(call LAB_CALIB,unshaped) bash scripts/lab_sweep.sh $(WALLCLOCK_DIR)/validation-runs/unshaped none 1,4,16 $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/lab_levels.py $(WALLCLOCK_DIR)/validation-runs/unshaped
	$(MAKE) clock-validation

clock-validation:  ## the clock's validation table from the lab runs and calibrations (lab-figure3, lab-validation)
	$(PLOT_PY) -m prsgd.clock.validate --compute-from-other-runs --out $(WALLCLOCK_DIR)/validation \
	    --setting "shaped $(LAB_RATE)=$(LAB_FIGURE3_DIR),$(WALLCLOCK_DIR)/calibration/lab-shaped-$(LAB_RATE).json" \
	    --setting "unshaped=$(WALLCLOCK_DIR)/validation-runs/unshaped,$(WALLCLOCK_DIR)/calibration/lab-unshaped.json"

clean:  ## remove the virtual environment and local runs
	rm -rf $(VENV) runs
