# aotwarm — two commands on a fresh machine:
#   make bundle   build a real bundle: Qwen3.5-9B's vLLM 0.33 GDN kernels for an H200, without a GPU
#   make test     run the test suite on the serving stack (Triton 3.8), and alongside it the Triton 3.6 leg
#
# The serving stack is what a vLLM 0.33.0 image has: `pip install vllm==0.33.0` with its own
# dependencies (torch 2.14.0, Triton 3.8.0, FlashInfer 0.7.2.post1).  vLLM's compiled ops load on a
# GPU-less machine (against aotwarm's libcuda stand-in), so its config code runs here as in serving.
# The second, lighter leg is Triton 3.6 (the GPU test machine's Triton) next to a CPU-only torch: the
# Triton-level mechanics (keys, virtual device, per-signature launchers, autotune, bundles, recording)
# through fla-core's kernels (LEG36).

PYTHON ?= python3
VENV   ?= .venv
VENV36 ?= .venv-triton36
BIN     = $(VENV)/bin
BIN36   = $(VENV36)/bin
VLLM    = vllm==0.33.0
# Triton 3.6 leg: torch 2.13.0 is the CPU build on this machine's disk; vLLM's Python sources only
PINS36  = torch==2.13.0 triton==3.6.0
LEG36   = tests/test_autotune_key.py tests/test_device.py tests/test_launchers.py tests/test_build_compile.py \
          tests/test_bundle_install.py tests/test_record.py

.PHONY: setup setup36 bundle test test38 test36 test-gpu clean

$(BIN)/aotwarm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-cache-dir $(VLLM)
	$(BIN)/pip install -q -e '.[fla,test]'
	@touch $@

$(BIN36)/aotwarm: pyproject.toml
	$(PYTHON) -m venv $(VENV36)
	$(BIN36)/pip install -q --upgrade pip
	$(BIN36)/pip install -q --no-cache-dir $(PINS36)
	$(BIN36)/pip install -q -e '.[fla,test,vllm-kernels]'
	$(BIN36)/pip install -q --no-deps $(VLLM)
	@touch $@

setup: $(BIN)/aotwarm

setup36: $(BIN36)/aotwarm

bundle: setup
	$(BIN)/aotwarm build Qwen/Qwen3.5-9B --gpu h200 --engine vllm -o caches/qwen35-9b.h200.tar.zst
	$(BIN)/aotwarm inspect caches/qwen35-9b.h200.tar.zst

# the Triton 3.6 leg (its venv set-up, then its tests) runs alongside the 3.8 leg, with its own Triton home;
# its output follows the 3.8 leg's.  `make test38` / `make test36` run one leg.
test: setup
	@{ $(MAKE) --no-print-directory setup36 && TRITON_HOME=$(CURDIR)/.triton36-home \
	   $(BIN36)/python -m pytest -q -ra $(LEG36); } > .test36.log 2>&1 & leg36=$$!; \
	$(BIN)/python -m pytest -q -ra --durations=30; rc38=$$?; \
	wait $$leg36; rc36=$$?; \
	echo "=== Triton 3.6 leg (ran alongside the 3.8 leg): exit $$rc36 ==="; cat .test36.log; \
	[ $$rc38 -eq 0 ] && [ $$rc36 -eq 0 ]

test38: setup
	$(BIN)/python -m pytest -q -ra --durations=30

test36: setup36
	$(BIN36)/python -m pytest -q -ra $(LEG36)

test-gpu: setup
	$(BIN)/python -m pytest -q -ra tests/gpu

clean:
	rm -rf $(VENV) $(VENV36) caches/*.tar.zst caches/.aotwarm-work
