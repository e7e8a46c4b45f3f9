# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test check lint docs demo demo-cluster bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the project metadata changes; editable so tests see the working tree.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m pip install --quiet --no-deps -c constraints.txt $(CLOUD_PROVIDERS)
	touch $(STAMP)

# The providers whose filesystems reach GCS and Azure, for the cloud destination tests: without their
# dependencies (see the test extra in pyproject.toml for why and for what they need).
CLOUD_PROVIDERS := apache-airflow-providers-google apache-airflow-providers-microsoft-azure

# What some tests need beyond Python: Debian's chromium (UI tests, driven by playwright-core from npm),
# Java (Spark reading the landed Parquet) and Azurite (Azure Storage's emulator, from npm). Installed when missing; where that is impossible (no root, no
# apt), those tests skip and say why.
SYSTEM_STAMP := .venv/.system-deps
$(SYSTEM_STAMP): tests/ui/package.json tests/ui/package-lock.json tests/azurite/package.json tests/azurite/package-lock.json | $(PY)
	@command -v chromium >/dev/null 2>&1 && command -v java >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	   default-jre-headless >/dev/null) || echo "warning: could not install chromium/java with apt-get"
	@(cd tests/ui && npm ci --no-audit --no-fund --silent) || echo "warning: npm ci in tests/ui failed"
	@(cd tests/azurite && npm ci --no-audit --no-fund --silent) || echo "warning: npm ci in tests/azurite failed"
	touch $@

# The production-shaped stack (make demo-cluster, tests/test_cluster.py) runs Debian's PostgreSQL and Redis.
CLUSTER_STAMP := .venv/.cluster-deps
$(CLUSTER_STAMP): | $(PY)
	@(command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1) && \
	  command -v redis-server >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql \
	   redis-server >/dev/null) || echo "warning: could not install postgresql/redis-server with apt-get"
	touch $@

# Locally the suites marked `long` (chaos and week backfills, crash recovery, fresh-virtualenv installs, the UI/REST trigger stack,
# the Celery cluster, the API-economy benchmark smoke) are left out to keep `make test` under 15 min from a plain clone;
# CI runs everything: .ci/run calls `make test PYTEST_ARGS=`.
PYTEST_ARGS ?= -m "not long"

# The whole local suite: lint, the docs site built strict, every test but `long`.
test: lint docs $(SYSTEM_STAMP) $(CLUSTER_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m demo

# The same DAGs on PostgreSQL + CeleryExecutor (2 workers, Redis) + S3 (moto); --keep-running leaves it up.
demo-cluster: $(STAMP) $(CLUSTER_STAMP)
	$(PY) -m demo.cluster $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run

# The documentation site (docs/ and mkdocs.yml) into site/; --strict fails on any warning: a broken link or
# anchor, a missing snippet section, a docstring griffe cannot match to its signature.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The fast tier (under 2 min): ruff, mypy and the tests marked `unit` (no Airflow stack, no scheduler or
# api-server process, no external service such as moto, PostgreSQL, Redis, Spark or chromium).
check: lint
	$(PY) -m pytest -q -m unit

SOURCES := voucherify_provider tests dags demo harness benchmarks docs/_ext
lint: $(STAMP)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .demo-cluster site
