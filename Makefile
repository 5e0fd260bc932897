# aotwarm — two commands on a fresh machine:
#   make bundle   build a real bundle: Qwen3.5-9B GDN kernels (fla-core 0.6) for an H100, without a GPU
#   make test     run the test suite (CPU; GPU tests under tests/gpu/ are skipped without a GPU)

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The test environment pins triton 3.6.0 (the H100 machine's) so CPU and GPU results compare.
# torch 2.13.0 is the CPU build; the kernels never run here, torch only builds tensors on the CPU.
PINS    = torch==2.13.0 triton==3.6.0
# vLLM 0.33's wheel requires torch 2.14; its Triton kernel sources run with the pinned torch/Triton,
# so it is installed without dependencies next to the light packages its modules import.
VLLM    = vllm==0.33.0

.PHONY: setup bundle test test-gpu clean

$(BIN)/aotwarm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PINS)
	$(BIN)/pip install -q -e '.[fla,test,vllm-kernels]'
	$(BIN)/pip install -q --no-deps $(VLLM)
	@touch $@

setup: $(BIN)/aotwarm

bundle: setup
	$(BIN)/aotwarm build Qwen/Qwen3.5-9B --gpu sm90 --engine fla -o caches/qwen35-9b.h100.tar.zst
	$(BIN)/aotwarm inspect caches/qwen35-9b.h100.tar.zst

test: setup
	$(BIN)/python -m pytest -q -ra

test-gpu: setup
	$(BIN)/python -m pytest -q -ra tests/gpu

clean:
	rm -rf $(VENV) caches/*.tar.zst caches/.aotwarm-work
