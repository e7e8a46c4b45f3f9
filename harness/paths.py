"""Where things are: the repository checkout and the virtualenv's executables, computed once."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: dags/, tests/, benchmarks/, harness/
EXAMPLE_DAGS = REPO_ROOT / "dags"  # the example DAGs the demos, end-to-end tests and benchmarks run
VENV_BIN = Path(sys.executable).parent  # airflow, moto_server, ... next to the running interpreter
