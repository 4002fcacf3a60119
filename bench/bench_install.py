"""Install footprint: the core install (``pip install pytest-hokusai``) vs the full dependency set.

Three installs, each into a fresh virtualenv, each timed from a local wheel cache
(``pip install --no-index --find-links CACHE``, pip's own configuration off) so that the network and
the registry's speed do not count:

- **before**: the dependency list of the last commit before the split (``BEFORE_COMMIT``'s
  ``pyproject.toml``): what a plain ``pip install pytest-hokusai`` brought until then (the issue
  measured 106 packages / 867 MB for it);
- **core**: this checkout's wheel, no extras: what a gate against a remote deployment needs;
- **full**: this checkout's wheel with ``[stack,chart]``: the same parts as *before*, on today's MLflow.

Per install: the distributions added to a bare venv (``pip list``, pip and setuptools excluded), the
MB on disk they add to ``site-packages`` (allocated blocks, hard links once, minus the bare venv's),
and the wall time of the ``pip install``. The wheel cache is filled once by ``pip download`` (not
timed) under ``$HOKUSAI_BENCH_CACHE`` (default ``~/.cache/pytest-hokusai/bench-wheels``). The target
compares *core* with *before*, measured in the same run: at most half the MB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import fmt, fresh_env, load1, new_result, target

NAME = "install"
ROOT = Path(__file__).resolve().parents[1]
#: The last commit whose default install carried the whole stack (mlflow<3.12 and the stack's parts).
BEFORE_COMMIT = "66a5c20"
#: The issue's measurement of that install.
ISSUE_BEFORE = {"packages": 106, "mb": 867}
#: The core as issue #12 lists it ("pytest, pytest-timeout, pytest-html, requests, the MLflow client
#: (mlflow-skinny ...), scikit-learn, numpy, pandas"), without the plugin: the least any core that
#: keeps that list can weigh.
ISSUE_CORE_LIST = ("pytest", "pytest-timeout", "pytest-html", "requests", "mlflow-skinny", "scikit-learn",
                   "numpy", "pandas")
_PIP_TIMEOUT_S = 1800
#: pip's own configuration off (no extra index, no find-links) and no self version check (network)
_PIP_ENV = fresh_env({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "pytest-hokusai" / "bench-wheels"
    return Path(os.environ.get("HOKUSAI_BENCH_CACHE") or default)


def _pip(python: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, env=env,
                          timeout=_PIP_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args[:3])} ... failed: {done.stderr[-1500:]}")
    return done


def _before_requirements() -> list[str]:
    import tomllib  # Python >= 3.11 (the bench machine's); the package itself supports 3.10

    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:pyproject.toml"], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    return list(tomllib.loads(text)["project"]["dependencies"])


def _disk_bytes(root: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def _largest(site: Path, n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` largest distributions pip added to ``site``: MB on disk of the files in their RECORD
    (compiled ``.pyc`` files included), pip and setuptools left out."""
    sizes: list[tuple[str, float]] = []
    for record in site.glob("*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0]
        if name in ("pip", "setuptools"):
            continue
        total = 0
        for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
            path = line.rsplit(",", 2)[0]
            try:
                total += os.lstat(site / path).st_blocks * 512
            except OSError:
                continue
        sizes.append((name, total / 1e6))
    return sorted(sizes, key=lambda item: -item[1])[:n]


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _dists(python: Path) -> set[str]:
    done = _pip(python, "list", "--format", "json", env=_PIP_ENV)
    return {d["name"].lower() for d in json.loads(done.stdout.splitlines()[0])}


def _measure(label: str, specs: list[str], cache: Path, work: Path) -> dict[str, Any]:
    venv = work / label
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    bare_dists = _dists(python)
    bare_bytes = _disk_bytes(_site_packages(venv))
    env = _PIP_ENV
    load = load1()
    started = time.perf_counter()
    _pip(python, "install", "-q", "--no-index", "--find-links", str(cache), *specs, env=env)
    seconds = time.perf_counter() - started
    dists = _dists(python) - bare_dists
    added = _disk_bytes(_site_packages(venv)) - bare_bytes
    largest = _largest(_site_packages(venv))
    mlflow = next((d for d in ("mlflow", "mlflow-skinny") if d in dists), None)
    version = ""
    if mlflow:
        shown = _pip(python, "show", mlflow, env=env).stdout
        version = next((line.split(":", 1)[1].strip() for line in shown.splitlines() if line.startswith("Version:")),
                       "")
    shutil.rmtree(venv, ignore_errors=True)
    return {"label": label, "packages": len(dists), "mb": added / 1e6, "seconds": seconds, "load1": load,
            "largest": largest, "mlflow": f"{mlflow} {version}" if mlflow else "-", "heavy": sorted(
                d for d in dists if d in ("mlflow", "pyarrow", "scipy", "matplotlib", "fastapi", "flask",
                                          "sqlalchemy", "uvicorn", "httpx", "alembic", "gunicorn"))}


def run(quick: bool = False) -> dict[str, Any]:
    res = new_result(NAME, "core install footprint vs the whole stack")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hokusai-bench-install-"))
    try:
        for old in cache.glob("pytest_hokusai-*.whl"):
            old.unlink()
        _pip(Path(sys.executable), "wheel", "-q", "--no-deps", "-w", str(cache), str(ROOT))
        wheel = next(cache.glob("pytest_hokusai-*.whl"))
        before = _before_requirements()
        # Fill the cache (not timed): everything the three installs need.
        _pip(Path(sys.executable), "download", "-q", "-d", str(cache), f"{wheel}[stack,chart]")
        _pip(Path(sys.executable), "download", "-q", "-d", str(cache), *before)
        _pip(Path(sys.executable), "download", "-q", "-d", str(cache), *ISSUE_CORE_LIST)
        variants = [("core", [str(wheel)]), ("floor", list(ISSUE_CORE_LIST)), ("full", [f"{wheel}[stack,chart]"])]
        if not quick:
            variants.insert(0, ("before", before))
        rows = [_measure(label, specs, cache, work) for label, specs in variants]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r["label"]: r for r in rows}
    res["method"] += [
        (f"fresh venv per install; `pip install --no-index --find-links <wheel cache>` timed (pip config off); "
         f"'before' = the dependencies of {BEFORE_COMMIT}'s pyproject.toml, 'core' = this checkout's wheel, "
         "'full' = the wheel with [stack,chart], 'floor' = the issue's core list alone (" + ", ".join(ISSUE_CORE_LIST)
         + "; no plugin)"),
        "packages = distributions added to the bare venv; MB = disk blocks added to site-packages (10^6 bytes)",
    ]
    res["tables"].append({
        "title": "installs",
        "columns": ["install", "packages", "MB on disk", "install s (local wheels)", "load1", "MLflow", "heavy parts"],
        "rows": [[r["label"], r["packages"], fmt(r["mb"], 0), fmt(r["seconds"], 1), fmt(r["load1"]), r["mlflow"],
                  ", ".join(r["heavy"]) or "-"] for r in rows],
    })
    res["tables"].append({
        "title": "the core's largest distributions (MB on disk, files in their RECORD)",
        "columns": ["distribution", "MB"],
        "rows": [[name, fmt(mb, 0)] for name, mb in by["core"]["largest"]],
    })
    base = by.get("before")
    base_mb = base["mb"] if base else float(ISSUE_BEFORE["mb"])
    core = by["core"]
    ratio = core["mb"] / base_mb
    res["targets"].append(target(
        "core install size vs before" + ("" if base else " (issue's 867 MB: quick run)"), "<= 50 %",
        f"{fmt(core['mb'], 0)} MB / {fmt(base_mb, 0)} MB = {ratio * 100:.0f} %", ratio <= 0.5))
    floor = by["floor"]
    res["targets"].append(target(
        "floor: the issue's core list alone vs before (info: no core that keeps the list weighs less)", "-",
        f"{fmt(floor['mb'], 0)} MB / {fmt(base_mb, 0)} MB = {floor['mb'] / base_mb * 100:.0f} %; the plugin's core "
        f"adds {fmt(core['mb'] - floor['mb'], 0)} MB", None))
    res["targets"].append(target(
        "core install packages vs before", "info",
        f"{core['packages']} / {base['packages'] if base else ISSUE_BEFORE['packages']}", None))
    res["targets"].append(target("core install time from local wheels", "info",
                                 f"{fmt(core['seconds'], 1)} s (full: {fmt(by['full']['seconds'], 1)} s)", None))
    res["metrics"] = {f"{r['label']}_{k}": r[k] for r in rows for k in ("packages", "mb", "seconds")}
    science = sum(mb for name, mb in core["largest"] if name in ("scipy", "numpy", "pandas", "scikit_learn"))
    res["notes"].append(f"scipy (scikit-learn's dependency), numpy, pandas and scikit-learn alone are {science:.0f} MB "
                        f"({science * 1e6 / (base_mb * 1e6) * 100:.0f} % of before): the toy model, its signature and "
                        "loading it back need them, so half the size is out of reach without dropping one of them.")
    res["notes"].append(
        f"The floor (the issue's own core list, nothing of the plugin) is {fmt(floor['mb'], 0)} MB "
        f"({floor['mb'] / base_mb * 100:.0f} % of before): above half before the plugin adds anything. What the "
        f"plugin's core adds beyond it is {fmt(core['mb'] - floor['mb'], 0)} MB (skops, which MLflow 3's sklearn "
        "flavour saves with, and the plugin).")
    res["notes"].append(f"The issue measured the plain install before the split at {ISSUE_BEFORE['packages']} "
                        f"packages / {ISSUE_BEFORE['mb']} MB.")
    return res
