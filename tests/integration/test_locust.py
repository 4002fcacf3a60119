"""The shipped locustfile, run headless by Locust for a few seconds against the local stack.

Locust runs in a subprocess (its own process group, a hard deadline): importing :mod:`locust`
monkeypatches the standard library with gevent, which must never happen inside pytest.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_hokusai.stack.launcher import Stack

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="locust is not installed: pip install 'pytest-hokusai[load]'",
)

REQUEST_NAMES = ("auth validate", "proxy experiments/search", "proxy register model", "proxy delete model")
HARD_TIMEOUT_S = 60.0


def _locustfile() -> str:
    # find_spec locates the module without importing it (an import would pull in locust and gevent).
    spec = importlib.util.find_spec("pytest_hokusai.locustfile")
    assert spec is not None and spec.origin, "pytest_hokusai.locustfile is not installed"
    return spec.origin


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m locust ARGS`` in its own process group; kill the group at the deadline.

    The working directory is inherited: coverage's subprocess measurement writes its data file there.
    """
    proc = subprocess.Popen([sys.executable, "-m", "locust", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HARD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"locust did not finish within {HARD_TIMEOUT_S:g} s; stderr tail:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _env(stack: Stack, raw_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "LOCUST_", "MLFLOW_"))}
    env.update(HOKUSAI_API_URL=stack.api_url, HOKUSAI_AUTH_URL=stack.auth_url, HOKUSAI_API_KEY=raw_key,
               HOKUSAI_TIMEOUT="10", PYTHONUNBUFFERED="1", **extra)
    return env


def test_headless_locust_run_against_local_stack(stack: Stack, tmp_path: Path) -> None:
    key = stack.mint_key(scopes=("read", "write"))
    raw = key.reveal()
    # Equal weights and short waits so all three tasks run several times within 5 s.
    env = _env(stack, raw, HOKUSAI_LOAD_WEIGHTS="validate=1,read=1,register=1", HOKUSAI_LOAD_WAIT="0.05,0.2")
    # A locustfile of one's own that imports HokusaiUser (the README's other usage). Unlike `-f` on the
    # shipped file, which Locust loads under the module name "locustfile", this imports
    # pytest_hokusai.locustfile under its own name, so coverage's subprocess measurement sees it.
    own = tmp_path / "my_locustfile.py"
    own.write_text("from pytest_hokusai.locustfile import HokusaiUser  # noqa: F401\n", encoding="utf-8")
    result = _run(
        ["-f", str(own), "--headless", "-u", "4", "-r", "4", "-t", "5s", "--only-summary",
         "--csv", str(tmp_path / "run"), "--exit-code-on-error", "1", "--host", stack.api_url],
        env,
    )
    assert result.returncode == 0, f"locust exited {result.returncode}; stderr tail:\n{key.redact(result.stderr[-3000:])}"

    stats_file = tmp_path / "run_stats.csv"
    with stats_file.open(newline="", encoding="utf-8") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    for name in REQUEST_NAMES:
        assert name in rows, f"no {name!r} row in {sorted(rows)}"
        assert int(rows[name]["Request Count"]) > 0, rows[name]
        assert int(rows[name]["Failure Count"]) == 0, rows[name]
    assert int(rows["Aggregated"]["Failure Count"]) == 0

    # The raw key (and its secret part) appears in no output and no file Locust wrote.
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    texts.update({p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("run*.csv")})
    assert "run_failures.csv" in texts and "run_stats_history.csv" in texts
    for where, text in texts.items():
        assert raw not in text and raw[len("hk_live_"):] not in text, f"the raw key leaked into {where}"


def test_missing_key_fails_at_start_naming_the_variable(stack: Stack) -> None:
    env = _env(stack, "")
    del env["HOKUSAI_API_KEY"]
    result = _run(["-f", _locustfile(), "--headless", "-u", "1", "-r", "1", "-t", "3s", "--only-summary",
                   "--host", stack.api_url], env)
    assert result.returncode != 0
    assert "HOKUSAI_API_KEY" in result.stderr
    assert "auth validate" not in result.stdout + result.stderr  # no request was made


def test_failures_name_the_status_and_a_body_excerpt(healthy_stack: Stack, tmp_path: Path) -> None:
    healthy_stack.set_faults(["registry-admin"])  # every MLflow path answers 403 REGISTRY_ADMIN_REQUIRED
    key = healthy_stack.mint_key(scopes=("read", "write"))
    env = _env(healthy_stack, key.reveal(), HOKUSAI_LOAD_WEIGHTS="validate=0,read=1,register=0",
               HOKUSAI_LOAD_WAIT="0.1,0.2")
    result = _run(
        ["-f", _locustfile(), "--headless", "-u", "2", "-r", "2", "-t", "2s", "--only-summary",
         "--csv", str(tmp_path / "run"), "--exit-code-on-error", "1", "--host", healthy_stack.api_url],
        env,
    )
    assert result.returncode == 1, key.redact(result.stderr[-2000:])
    with (tmp_path / "run_failures.csv").open(newline="", encoding="utf-8") as fh:
        failures = list(csv.DictReader(fh))
    assert failures, "no failure recorded"
    assert {row["Name"] for row in failures} == {"proxy experiments/search"}
    error = failures[0]["Error"]
    assert "HTTP 403" in error and "REGISTRY_ADMIN_REQUIRED" in error, error
    assert key.reveal() not in result.stdout + result.stderr + error
