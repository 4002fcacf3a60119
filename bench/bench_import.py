"""Import cost of the plugin module and which heavy modules it drags in (must be none).

``python -X importtime -c "import pytest_hokusai.plugin"`` in a fresh subprocess, 5 times; the
total is the sum of the "self" column (every module imported, interpreter startup included). The
same for ``-c pass`` and ``-c "import pytest"`` as baselines, so the plugin's own share is the
difference to ``import pytest``. A separate subprocess lists the heavy packages in ``sys.modules``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import fmt, fresh_env, new_result, target

NAME = "import"
HEAVY = ("mlflow", "sklearn", "pandas", "fastapi", "uvicorn", "matplotlib")
#: Also reported (not a target): other big packages a plugin import should not need.
WATCH = ("numpy", "starlette", "sqlalchemy", "httpx", "requests", "pydantic", "scipy", "flask")
_CASES = (
    ("python -c pass", "pass"),
    ("import pytest", "import pytest"),
    ("import pytest_hokusai.plugin", "import pytest_hokusai.plugin"),
)
#: pytest first, then the plugin: the plugin's top-level import entries are then its own increment.
_INCREMENT = "import pytest; import pytest_hokusai.plugin"


def _importtime(code: str, cwd: str) -> tuple[int, float, list[tuple[int, int, str, bool]]]:
    """(sum of self us, wall seconds, entries ``(self us, cumulative us, module, nested)`` in order)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env=fresh_env(), cwd=cwd, timeout=60, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed: {proc.stderr[-400:]}")
    entries: list[tuple[int, int, str, bool]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) < 3:
            continue
        nested = len(parts[2]) - len(parts[2].lstrip()) > 1
        entries.append((int(parts[0]), int(parts[1]), parts[2].strip(), nested))
    return sum(e[0] for e in entries), wall, entries


def _after_pytest(entries: list[tuple[int, int, str, bool]]) -> list[tuple[int, int, str, bool]]:
    """The entries imported after the top-level ``pytest`` import (importtime prints children first)."""
    last = max((i for i, e in enumerate(entries) if e[2] == "pytest" and not e[3]), default=-1)
    return entries[last + 1:]


def _loaded(code: str, cwd: str) -> set[str]:
    probe = code + "; import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=fresh_env(),
                          cwd=cwd, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"module listing failed: {proc.stderr[-400:]}")
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    reps = 2 if quick else 5
    result = new_result(NAME, "Plugin import cost and heavy modules")
    result["method"] = [
        (f"`python -X importtime -c CODE` in a fresh subprocess (minimal env, cwd a temp dir), {reps} times "
        "per case, interleaved; total = sum of the `self [us]` column; median reported. Wall = subprocess "
        "wall time (interpreter start to exit), median."),
        (f"Plugin's own cost: `{_INCREMENT}` under importtime, sum of the self times of "
        "every module imported after `pytest` (what the plugin adds once pytest is loaded), median."),
        ("Heavy modules: top-level packages in `sys.modules` after `import pytest_hokusai.plugin` "
        f"(separate subprocess); target: none of {', '.join(HEAVY)}."),
    ]
    totals: dict[str, list[int]] = {label: [] for label, _ in _CASES}
    walls: dict[str, list[float]] = {label: [] for label, _ in _CASES}
    increments: list[int] = []
    ours: list[tuple[int, int, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as cwd:
        for _ in range(reps):
            for label, code in _CASES:
                total, wall, _mods = _importtime(code, cwd)
                totals[label].append(total)
                walls[label].append(wall)
            _total, _wall, entries = _importtime(_INCREMENT, cwd)
            ours = _after_pytest(entries)
            increments.append(sum(e[0] for e in ours))
        loaded = _loaded("import pytest_hokusai.plugin", cwd)
        loaded_pytest = _loaded("import pytest", cwd)
    med = {label: statistics.median(v) for label, v in totals.items()}
    med_wall = {label: statistics.median(v) for label, v in walls.items()}
    heavy = sorted(set(HEAVY) & loaded)
    watched = sorted(set(WATCH) & loaded)
    added = sorted(m for m in loaded - loaded_pytest if not m.startswith("_"))
    plugin_share = statistics.median(increments)
    result["metrics"] = {"median_total_us": med, "median_wall_s": med_wall, "all_totals_us": totals,
                         "plugin_increment_us": increments, "heavy_loaded": heavy, "watched_loaded": watched, "added_over_pytest": added}
    result["tables"].append({
        "title": "Import time (median)",
        "columns": ["case", "importtime total (ms)", "runs (ms)", "subprocess wall (ms)"],
        "rows": [[label, fmt(med[label] / 1000, 1), ", ".join(fmt(t / 1000, 1) for t in totals[label]),
                  fmt(med_wall[label] * 1000, 0)] for label, _ in _CASES],
    })
    if ours:
        top = sorted(ours, key=lambda e: e[0], reverse=True)[:8]
        result["tables"].append({
            "title": f"Most expensive modules the plugin adds (last `{_INCREMENT}` run, self time)",
            "columns": ["module", "self (ms)", "cumulative (ms)"],
            "rows": [[m, fmt(self_us / 1000, 1), fmt(cum / 1000, 1)] for self_us, cum, m, _n in top],
        })
    result["targets"].append(target(
        "heavy modules loaded by `import pytest_hokusai.plugin`", "none",
        ", ".join(heavy) if heavy else "none", not heavy,
    ))
    result["targets"].append(target(
        "plugin's own import cost after `import pytest` (info)", "-",
        f"{plugin_share / 1000:.1f} ms (totals: plugin {med['import pytest_hokusai.plugin'] / 1000:.1f} ms, "
        f"pytest {med['import pytest'] / 1000:.1f} ms, bare {med['python -c pass'] / 1000:.1f} ms)", None,
    ))
    result["notes"].append(
        "Other packages loaded by the plugin import (beyond `import pytest`): "
        + (", ".join(added) if added else "none")
        + f". Of the watched big ones: {', '.join(watched) if watched else 'none'}."
    )
    return result
