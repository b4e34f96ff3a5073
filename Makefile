# Entry points. Every target installs what is missing first (tools/install.sh); a second run
# skips the install unless requirements/stack.txt, tools/install.sh or setup.cfg changed.
# GPU users: TORCH_SPEC=... and SKIP_MMCV_BUILD=1 (see README) are passed through.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparsevit-stack-installed
PYTEST_ARGS ?=

.PHONY: install test demo lint bench bench-cuda clean-venv

$(STAMP): requirements/stack.txt tools/install.sh setup.cfg
	VENV=$(VENV) bash tools/install.sh
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) tools/benchmark_latency.py --arch tiny --shape 6 3 256 704 --json work_dirs/bench/latency_cpu.json --plot work_dirs/bench/latency_cpu.png

# no venv needed: a GPU machine without OpenMMLab packages runs it from tools/pack_device.sh's .device
bench-cuda:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash tools/benchmark_cuda.sh work_dirs/bench/cuda

clean-venv:
	rm -rf $(VENV)
