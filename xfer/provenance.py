"""Where a result came from: git commit (and whether the code differed from it: a modified file
that is not a result, a page or a plot, ``is_result``), date, machine, Python and key package
versions, the exact command. Every results JSON under ``experiments/`` carries it."""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("mxnet", "gluonnlp", "numpy", "scikit-learn", "pandas", "hydra-core", "mlflow", "catboost")
ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code this process runs (None outside a git checkout)."""
    return _git("rev-parse", "HEAD")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed(repeats: int = 3) -> dict:
    """Two fixed workloads timed now (best of ``repeats``, about half a second in all): a pure-Python
    loop on one core (million iterations per second) and a float32 matrix product on all cores
    (GFLOP/s). Cloud machines with the same CPU label and core count differ in speed from host to
    host; with these a time figure can be set against the speed of the machine that produced it."""
    import numpy as np

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    loops = 1_000_000

    def loop() -> None:
        total = 0
        for i in range(loops):
            total += i

    n, products = 512, 8
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)

    def matmul() -> None:
        for _ in range(products):
            a @ a

    return {"python_mloops_per_second": round(loops / best(loop) / 1e6, 2),
            "matmul_gflops": round(2 * n ** 3 * products / best(matmul) / 1e9, 1)}


def machine() -> dict:
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024  # MemTotal, kB -> MB
    except (OSError, IndexError, ValueError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores, "memory_mb": mem, "arch": platform.machine(),
            "os": platform.platform(terse=True), "speed": speed()}


def command(argv: list[str] | None = None) -> str:
    """The command as a user re-runs it from the project root (no absolute paths of this machine)."""
    argv = list(sys.argv if argv is None else argv)
    script = argv[0]
    try:
        script = str(Path(script).resolve().relative_to(ROOT))
    except ValueError:
        script = Path(script).name
    return " ".join(["python", script, *argv[1:]])


def is_result(path: str) -> bool:
    """A file that cannot change what a study computes: results JSON, pages and plots (markdown and
    images anywhere, e.g. the READMEs' generated tables). Other studies' fresh results in the tree
    do not make a record dirty; code, configs and data do."""
    parts = Path(path).parts
    return parts[:2] == ("experiments", "results") or Path(path).suffix in (".md", ".png")


def provenance(argv: list[str] | None = None) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    if status:  # "XY path" (or "XY old -> new"); only changes outside the results count
        status = "\n".join(line for line in status.splitlines() if not is_result(line[3:].split(" -> ")[-1]))
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
            "python": platform.python_version(), "packages": versions, "command": command(argv)}
