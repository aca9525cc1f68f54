# prsgd: `make help` lists the targets. By default everything runs in .venv, which the first
# target to need it creates (torch, the package, Horovod built by scripts/install_horovod.sh).
# In an environment of your own (conda, a venv you made): `make TARGET PY=python` uses that
# Python and installs only what it lacks; `make TARGET VENV=DIR` uses (or makes) the venv DIR.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
NP ?=
DATA ?=
SHARED_DATA := ../shared/data/cifar10-jpeg
export PYTHONPATH := $(CURDIR)/src

ifeq ($(origin PY),command line)
# An environment the user made: nothing to create, each target checks what it needs.
BASE := use-env-base
FULL := use-env
else
VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
BASE := $(VENV)/.prsgd-base
FULL := $(VENV)/.prsgd-installed
endif
# Launchers (horovodrun, mpirun, torchrun) next to the chosen Python come first.
PY_DIR := $(dir $(shell command -v $(PY) 2>/dev/null || echo $(PY)))
export PATH := $(PY_DIR):$(PATH)

# ranks: make train 2, the Figure 3 targets the paper's 8; NP=N overrides both
ifneq ($(NP),)
ifeq ($(shell [ "$(NP)" -ge 1 ] 2>/dev/null && echo ok),)
$(error NP must be a positive integer (got '$(NP)'))
endif
endif
TRAIN_NP := $(or $(NP),2)
PAPER_NP := $(or $(NP),8)

.DEFAULT_GOAL := help
.PHONY: compression reproduce-gpus reproduce-1gpu-check help install install-base use-env use-env-base doctor test test-fast smoke train clean \
	family stich reproduce reproduce-1gpu demo figure figure3-clock notebook bench bench-comm \
	lab-up lab-down lab-figure3 lab-validation lab-compression lab-codec lab-comm-wait \
	clock-validation

help:  ## list the targets (PY=python: use the active environment instead of .venv)
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# --- install ---------------------------------------------------------------------------------------
ifneq ($(origin PY),command line)
$(BASE): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(FULL): $(BASE) scripts/install_horovod.sh scripts/patches/horovod-0.28.1.patch src/prsgd/install/hvd_build.py
	bash scripts/install_horovod.sh $(PY)
	$(PY_DIR)horovodrun --check-build | grep -q "\[X\] PyTorch"
	touch $@
endif

# PY=...: install into that environment only what it lacks (a conda env from environment.yml
# has all of it but Horovod; a Horovod already there is kept as it is).
use-env-base:
	@$(PY) -c "import importlib.metadata as m; m.version('prsgd')" 2>/dev/null || \
	  $(PY) -m pip install --quiet -e ".[test]"
use-env: use-env-base
	@$(PY) -c "import horovod.torch" 2>/dev/null || bash scripts/install_horovod.sh $(PY)

install: $(FULL)  ## .venv (or VENV=, PY=): torch, prsgd, Horovod (cached build, ~4 min the first time)
install-base: $(BASE)  ## the same without Horovod (enough for the packed backend and the plots)

doctor: $(FULL)  ## versions, GPUs, Horovod's build, a real 2-rank allreduce check
	$(PY) -m prsgd.doctor

# --- tests -----------------------------------------------------------------------------------------
test-fast: $(BASE)  ## the unit tier (tests/unit: in-process, no launcher; 20 s on 2 cores)
	$(PY) -m pytest -q tests/unit

test: $(FULL)  ## both tiers, as CI (.ci/run); first says what skips here and why (13 min, 2 cores)
	@$(PY) scripts/test_plan.py
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m prsgd.lab deps; fi
	$(PY) -m pytest -q

# --- small runs ------------------------------------------------------------------------------------
smoke: $(FULL)  ## a few-second 2-rank training run on synthetic data (into runs/)
	$(PY) -m prsgd.supervise horovodrun -np 2 --gloo $(PY) -m prsgd.train --preset smoke \
	  --dataset synthetic --interval 4 --out runs

train: $(FULL)  ## NP ranks (2), demo preset, I=4, 5 epochs, shared JPEG copy or DATA= (CPU)
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	if [ ! -e "$$data" ]; then echo "make train: no data: set DATA=PATH (ImageFolder tree or zip of CIFAR-10)"; exit 2; fi; \
	$(PY) -m prsgd.supervise horovodrun -np $(TRAIN_NP) --gloo $(PY) -m prsgd.train --preset demo \
	  --dataset imagefolder --data "$$data" --interval 4 --out runs $(ARGS)

family: $(FULL)  ## every algorithm on a small real run -> results/family (CPU, shared JPEG copy)
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	bash scripts/family_runs.sh results/family "$$data"

compression: $(FULL)  ## compressors vs raising I, 8 packed workers, ~35 min -> results/compress-cpu (CPU, shared JPEG copy)
	@data="$(DATA)"; [ -n "$$data" ] || data="$(SHARED_DATA)"; \
	PY=$(PY) bash scripts/compression_runs.sh "$$data" results/compress-cpu/runs && \
	$(PY) -m prsgd.plots.compression results/compress-cpu

stich: $(BASE)  ## Stich's local-SGD speed-up experiment -> results/theory/stich (CPU, minutes)
	$(PY) scripts/stich_speedup.py --workers 1,2,4,8,16,32 --intervals 1,8,64 --repeats 2 --out results/theory/stich

# --- Figure 3: the sweep over intervals, then the plot ----------------------------------------------
INTERVALS ?= 1,4,8,16,32
SEEDS ?= 0
GLOO ?= 1
SWEEP ?=
DEMO_DIR ?= results/figure3-cpu-demo
REPRODUCE_DIR ?= results/figure3-8gpu
ONE_GPU_DIR ?= results/figure3-h100-packed
LAB_FIG3_DIR ?= results/figure3-lab
ONE_GPU_ARGS ?= --cuda-graph --precision bf16 --channels-last --deterministic false
SWEEP_RUN = $(PY) scripts/sweep.py --intervals $(INTERVALS) --seeds $(SEEDS) \
	$(if $(filter 0,$(GLOO)),--no-gloo,) --data $(if $(DATA),$(DATA),auto)
# The GPU targets check first, before any install, with nvidia-smi (no torch needed): fewer GPUs
# than ranks would share GPUs, and panel (b)'s clock would be their contention. A one-line
# refusal instead; ALLOW_FEWER_GPUS=1 runs anyway.
need_gpus = @n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); \
	[ "$(ALLOW_FEWER_GPUS)" = 1 ] || [ "$$n" -ge $(1) ] || { echo "make $(2), this machine has \
	$$n ($(3); ALLOW_FEWER_GPUS=1 runs anyway)"; exit 2; }

reproduce-gpus:
	$(call need_gpus,$(PAPER_NP),reproduce: $(PAPER_NP) ranks need $(PAPER_NP) GPUs,NP=N for fewer ranks; make reproduce-1gpu for one GPU)

# The committed one-GPU run was made by the trainer directly, not by the sweep driver (no
# manifest.json): a sweep into it would put new runs beside it, and the figure would mix them.
reproduce-1gpu-check:
	$(call need_gpus,1,reproduce-1gpu: the paper-scale packed sweep needs a GPU,make demo runs Figure 3 scaled down on CPU)
	@if [ -d $(ONE_GPU_DIR)/sweep/runs ] && [ ! -e $(ONE_GPU_DIR)/sweep/manifest.json ]; then \
	  echo "make reproduce-1gpu: $(ONE_GPU_DIR) holds a run not made by the sweep driver (the \
	committed one); write yours elsewhere: make reproduce-1gpu ONE_GPU_DIR=DIR"; exit 2; fi

reproduce: reproduce-gpus $(FULL)  ## the paper: NP ranks (8), 300 epochs, 8 GPUs, Horovod -> results/figure3-8gpu/ (never run yet)
	$(SWEEP_RUN) --np $(PAPER_NP) --out $(REPRODUCE_DIR)/sweep -- --preset paper $(ARGS)
	$(PY) scripts/plot_figure3.py $(REPRODUCE_DIR)/sweep --out $(REPRODUCE_DIR)

reproduce-1gpu: reproduce-1gpu-check $(BASE)  ## the paper on ONE GPU, 8 packed workers, no Horovod -> results/figure3-h100-packed/ (11 min, one H100)
	$(PY) scripts/sweep.py --intervals $(INTERVALS) --seeds $(SEEDS) --backend packed --pack \
		--np $(PAPER_NP) --data $(if $(DATA),$(DATA),auto) --out $(ONE_GPU_DIR)/sweep -- --preset paper $(ONE_GPU_ARGS) $(ARGS)
	$(PY) scripts/plot_figure3.py $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR)

demo: $(FULL)  ## Figure 3 scaled down: 8 Gloo ranks, demo preset -> results/figure3-cpu-demo/ (24 min, 2 shared CPU cores)
	$(SWEEP_RUN) --np $(PAPER_NP) --out $(DEMO_DIR)/sweep -- --preset demo $(ARGS)
	$(PY) scripts/plot_figure3.py $(DEMO_DIR)/sweep --out $(DEMO_DIR)

figure: $(BASE)  ## re-plot Figure 3 and the tables of SWEEP=dir (into OUT=dir, default SWEEP)
	@[ -n "$(SWEEP)" ] || { echo "usage: make figure SWEEP=path/to/sweep-dir [OUT=dir]"; exit 2; }
	$(PY) scripts/plot_figure3.py $(SWEEP) $(if $(OUT),--out $(OUT),)

CAL := results/wallclock/calibration
figure3-clock: $(BASE)  ## results/figure3-h100-packed re-plotted with a modelled clock, and the time-to-target figure
	$(PY) scripts/plot_figure3.py $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR) --clock $(CAL)/h100-pcie3-box.json
	$(PY) -m prsgd.plots.clock time-to-target $(ONE_GPU_DIR)/sweep --out $(ONE_GPU_DIR) \
		--clock "NVLink box=$(CAL)/h100-nvlink-box.json" --clock "PCIe gen3 box=$(CAL)/h100-pcie3-box.json" \
		--clock "PCIe gen3 box, 2018 Horovod (5 ms cycle)=$(CAL)/h100-pcie3-box-cycle5ms.json" \
		--clock "25 GbE, 8 nodes=$(CAL)/h100-25gbe.json" --clock "1 GbE, 8 nodes=$(CAL)/h100-1gbe.json"

notebook: $(BASE)  ## re-execute notebooks/figure3.ipynb on the committed results, outputs saved in it
	$(PY) scripts/execute_notebook.py notebooks/figure3.ipynb

bench: $(FULL)  ## step throughput side by side (plain Horovod loop, ours, packed) -> results/bench/
	$(PY) benchmarks/bench.py $(ARGS)

bench-comm: $(FULL)  ## Horovod cycle time vs round latency, real Gloo ranks -> results/bench/
	$(PY) benchmarks/bench_comm.py $(ARGS)

# --- the lab: a cluster of network namespaces on this machine (python -m prsgd.lab; root) ------------
LAB_NAME ?= lab
LAB_NODES ?= 2
LAB_SLOTS ?= 2
LAB_RATE ?= 50mbit
WALLCLOCK_DIR ?= results/wallclock
LAB_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))  # the lab needs only the standard library
# Figure 3 on the lab, sized for 2 CPU cores: 2 nodes x 2 ranks (1 core per node), the demo
# subset of the shared JPEG copy (4,096 images: 32 steps per epoch per rank), 3 epochs.
LAB_ARGS ?= --preset demo --train-subset 4096 --epochs 3 --lr-milestones 2 --test-subset 500
LAB_REPEATS ?= 2
# the clock's calibration on the same lab, right after the runs
LAB_CALIB = CLOCK_SRC=$(CURDIR)/src CALIB_OUT=$(WALLCLOCK_DIR)/calibration/lab-$(1)
lab-up:  ## build the lab (LAB_NODES nodes x LAB_SLOTS slots, links at LAB_RATE); root
	$(LAB_PY) -m prsgd.lab up --name $(LAB_NAME) --nodes $(LAB_NODES) --slots $(LAB_SLOTS) --rate $(LAB_RATE)

lab-down:  ## remove the lab
	$(LAB_PY) -m prsgd.lab down --name $(LAB_NAME)

lab-figure3: $(FULL)  ## Figure 3 on the lab: 2 nodes x 2 ranks, LAB_RATE links -> results/figure3-lab/ (12 min, 2 cores, root)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) $(call LAB_CALIB,shaped-$(LAB_RATE)) bash scripts/lab_sweep.sh $(LAB_FIG3_DIR) $(LAB_RATE) $(INTERVALS) $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/plot_figure3.py $(LAB_FIG3_DIR)/sweep --out $(LAB_FIG3_DIR)
	$(PY) scripts/lab_levels.py $(LAB_FIG3_DIR)

lab-validation: $(FULL)  ## the clock's validation runs on the lab, unshaped links (6 min, 2 cores, root)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) $(call LAB_CALIB,unshaped) bash scripts/lab_sweep.sh $(WALLCLOCK_DIR)/validation-runs/unshaped none 1,4,16 $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/lab_levels.py $(WALLCLOCK_DIR)/validation-runs/unshaped
	$(MAKE) clock-validation

# Issue 19 §6: every way to communicate less, on the same lab and link, 2 seeds. One sweep per line:
# "SUBDIR INTERVALS TRAINING-ARGS" (scripts/lab_sweep.sh VARIANTS), each seed's variants in a row.
LAB_COMPRESS_DIR ?= results/compress-lab
define LAB_COMPRESS_VARIANTS
fp32 1,4
fp16 1,4 --compressor fp16
int8 1,4 --compressor int8
topk1pc 1,4 --compressor topk --topk-ratio 0.01
overlap 4 --overlap-delay 2
fp16-overlap 4 --compressor fp16 --overlap-delay 2
int8-overlap 4 --compressor int8 --overlap-delay 2
topk1pc-overlap 4 --compressor topk --topk-ratio 0.01 --overlap-delay 2
adacomm 8 --algorithm adacomm --adacomm-every-epochs 1
sync 1 --algorithm gradient_allreduce
sync-bucketed 1 --algorithm gradient_allreduce --bucket-mb 0.25
endef
export LAB_COMPRESS_VARIANTS
lab-compression: $(FULL)  ## compressors, overlap, AdaComm, bucketed sync on the lab at LAB_RATE -> results/compress-lab/ (38 min, 2 cores, root)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) VARIANTS="$$LAB_COMPRESS_VARIANTS" \
	    $(call LAB_CALIB,compress-$(LAB_RATE)) bash scripts/lab_sweep.sh $(LAB_COMPRESS_DIR) \
	    $(LAB_RATE) - $(LAB_REPEATS) -- $(LAB_ARGS)
	$(MAKE) clock-validation
	$(PY) -m prsgd.plots.communicate_less $(LAB_COMPRESS_DIR)

# The codec check: do the compressors' encode/decode times (clock/codecs.py), calibrated on the
# lab, account for what a compressed round's measured time exceeds its collectives' model by?
LAB_CODEC_DIR ?= results/codec-lab
define LAB_CODEC_VARIANTS
fp32 1
fp16 1 --compressor fp16
int8 1,4 --compressor int8
topk1pc 1,4 --compressor topk --topk-ratio 0.01
endef
export LAB_CODEC_VARIANTS
lab-codec: $(FULL)  ## compressed rounds' encode/decode time on the lab, measured vs modelled -> results/codec-lab/ (15 min, 2 cores, root)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) VARIANTS="$$LAB_CODEC_VARIANTS" \
	    $(call LAB_CALIB,codec-$(LAB_RATE)) bash scripts/lab_sweep.sh $(LAB_CODEC_DIR) \
	    $(LAB_RATE) - $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/codec_check.py $(LAB_CODEC_DIR) $(WALLCLOCK_DIR)/calibration/lab-codec-$(LAB_RATE).json
	$(MAKE) clock-validation

# The wait check: how far is rank 0's communication time (comm_seconds) from the least any
# process spent averaging (comm_seconds_min)? scripts/comm_wait.py sets both against the clock.
LAB_WAIT_DIR ?= results/comm-wait-lab
define LAB_WAIT_VARIANTS
fp32 1,4
int8 1,4 --compressor int8
topk1pc 1,4 --compressor topk --topk-ratio 0.01
endef
export LAB_WAIT_VARIANTS
lab-comm-wait: $(FULL)  ## rank 0's comm seconds vs the least process's, vs the clock, on the lab -> results/comm-wait-lab/ (20 min, 2 cores, root)
	PY=$(PY) DATA=$(if $(DATA),$(DATA),auto) VARIANTS="$$LAB_WAIT_VARIANTS" \
	    $(call LAB_CALIB,wait-$(LAB_RATE)) bash scripts/lab_sweep.sh $(LAB_WAIT_DIR) \
	    $(LAB_RATE) - $(LAB_REPEATS) -- $(LAB_ARGS)
	$(PY) scripts/comm_wait.py $(LAB_WAIT_DIR) $(WALLCLOCK_DIR)/calibration/lab-wait-$(LAB_RATE).json
	$(MAKE) clock-validation

clock-validation: $(BASE)  ## the clock's validation table from the lab runs (after lab-figure3, lab-validation)
	$(PY) -m prsgd.clock.validate --compute-from-other-runs --out $(WALLCLOCK_DIR)/validation \
	    --setting "shaped $(LAB_RATE)=$(LAB_FIG3_DIR),$(WALLCLOCK_DIR)/calibration/lab-shaped-$(LAB_RATE).json" \
	    --setting "unshaped=$(WALLCLOCK_DIR)/validation-runs/unshaped,$(WALLCLOCK_DIR)/calibration/lab-unshaped.json" \
	    --setting "less $(LAB_RATE)=$(LAB_COMPRESS_DIR),$(WALLCLOCK_DIR)/calibration/lab-compress-$(LAB_RATE).json" \
	    --setting "codec $(LAB_RATE)=$(LAB_CODEC_DIR),$(WALLCLOCK_DIR)/calibration/lab-codec-$(LAB_RATE).json" \
	    --setting "wait $(LAB_RATE)=$(LAB_WAIT_DIR),$(WALLCLOCK_DIR)/calibration/lab-wait-$(LAB_RATE).json"

clean:  ## remove .venv (not a PY= environment) and local runs/
	rm -rf $(if $(filter command line,$(origin PY)),,$(VENV)) runs
