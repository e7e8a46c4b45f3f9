"""Benchmark processes: one benchmark engine run in a fresh process (its JSON report), and a process's peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.paths import REPO_ROOT


def run_engine(engine: str, source: str | Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One run of ``benchmarks.engines`` (its own process, so peak RSS is its own); its report, plus
    ``process_seconds``: the whole process, from start to exit, imports and all (what a task waits)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as out:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmarks.engines", engine, str(source), out],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800,
                              env={**os.environ, **(env or {})})
        process_seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{engine} failed: {done.stderr[-2000:]}")
        return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (``VmHWM``). Not ``ru_maxrss``: Linux carries
    that over from the forking parent across exec, so a child of a big parent would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is
