# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the project metadata changes; editable so tests see the working tree.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Locally the suites marked `long` (chaos and week backfills) are left out to keep `make test` well under 15 min;
# CI runs everything: .ci/run calls `make test PYTEST_ARGS=`.
PYTEST_ARGS ?= -m "not long"

test: $(STAMP)
	$(VENV)/bin/ruff check voucherify_provider tests dags demo benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m demo

bench: $(STAMP)
	$(PY) -m benchmarks.run

lint: $(STAMP)
	$(VENV)/bin/ruff check voucherify_provider tests dags demo benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
