"""The README's guide for third-party developers works, verbatim, against the local stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _third_party_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## For third-party developers", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_readme_registration_snippet_runs_against_local_stack(stack, tmp_path):
    key = stack.mint_key(scopes=("read", "write"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
    env.update({
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_TOKEN": key.reveal(),
        # fail fast instead of MLflow's ~4-minute retry loop if something is wrong
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    })
    script = tmp_path / "register.py"
    script.write_text(_third_party_snippet(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:].replace(key.reveal(), key.masked)
    assert re.search(r"registered version \d+", proc.stdout), proc.stdout
    assert key.reveal() not in output
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists(), (
        "the snippet wrote to a local store instead of the Hokusai tracking server"
    )
