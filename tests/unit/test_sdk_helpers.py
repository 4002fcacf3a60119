"""pytest_hokusai.sdk: finding the SDK (and the skip reasons), the scoped environment, the event as
evidence, the CLI's environment and output."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from pytest_hokusai import sdk as hs
from pytest_hokusai.secret import Secret

KEY = Secret("hk_live_" + "S3" * 14 + "sdk1", source="test")
GIT_LINE = "hokusai-data-pipeline.git#subdirectory=hokusai-ml-platform"


@pytest.fixture
def fake_hokusai(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a package named ``hokusai`` with the given source first on sys.path (and forget the real one)."""

    def make(source: str) -> None:
        package = tmp_path / "hokusai"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        for name in [m for m in sys.modules if m == "hokusai" or m.startswith("hokusai.")]:
            monkeypatch.delitem(sys.modules, name)
        importlib.invalidate_caches()

    yield make
    for name in [m for m in sys.modules if m == "hokusai" or m.startswith("hokusai.")]:
        del sys.modules[name]


def test_missing_sdk_skip_reason_names_the_git_install_and_the_pypi_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(hs.importlib.util, "find_spec", lambda name, *a: None if name == "hokusai" else real(name, *a))
    module, reason = hs.load_sdk()
    assert module is None
    assert "not on PyPI" in reason and "unrelated" in reason and GIT_LINE in reason
    assert 'pip install "hokusai-ml-platform[ml] @ git+https://github.com/Hokusai-protocol/' in reason


def test_the_unrelated_pypi_hokusai_is_named(fake_hokusai) -> None:
    fake_hokusai('"""Artsy\'s Docker development toolkit."""\n')
    module, reason = hs.load_sdk()
    assert module is None and "unrelated PyPI package 'hokusai'" in reason and GIT_LINE in reason


def test_sdk_without_its_ml_extra_is_named(fake_hokusai) -> None:
    fake_hokusai('''
        def __getattr__(name):
            raise ImportError("'ModelRegistry' requires ML dependencies that are not installed.")
    ''')
    module, reason = hs.load_sdk()
    assert module is None and "without its [ml] extra" in reason and GIT_LINE in reason


def test_sdk_environment_sets_what_the_sdk_reads_and_restores_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "false")  # presence-tested by the SDK: it would skip MLflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere.test")
    monkeypatch.delenv("HOKUSAI_API_KEY", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "basic-user")
    before = dict(os.environ)
    with hs.sdk_environment(api_url="https://registry.example.test/", tracking_uri="https://registry.example.test/api/mlflow",
                            key=KEY):
        assert os.environ["HOKUSAI_API_KEY"] == KEY.reveal() == os.environ["MLFLOW_TRACKING_TOKEN"]
        assert os.environ["HOKUSAI_API_ENDPOINT"] == "https://registry.example.test/api"
        assert os.environ["MLFLOW_TRACKING_URI"] == "https://registry.example.test/api/mlflow"
        assert "HOKUSAI_MOCK_MODE" not in os.environ and "MLFLOW_TRACKING_USERNAME" not in os.environ
        os.environ.pop("MLFLOW_TRACKING_TOKEN")  # what the F15 SDK did
        os.environ["MLFLOW_TRACKING_URI"] = "http://localhost:5001"
    assert dict(os.environ) == before


def test_event_url_follows_the_sdk() -> None:
    assert hs.event_url(None, "https://registry.example.test/api") == (
        "https://registry.example.test/api/models/tokenized-registration-events")


class FakeNotificationError(Exception):
    def __init__(self, message: str, status_code: int | None = None, response_body: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_body = response_body


def test_event_exchange_keeps_the_platforms_answer_and_masks_the_key() -> None:
    url = "https://registry.example.test/api/models/tokenized-registration-events"
    ok = hs.event_exchange(url, KEY, response={"status": "ok", "event_emitted": True})
    assert ok.ok and ok.label == hs.EVENT_LABEL and ok.auth == f"Bearer {KEY.masked}" and '"event_emitted": true' in ok.body_excerpt
    refused = hs.event_exchange(url, KEY, error=FakeNotificationError(
        "... failed with HTTP 403.", 403, '{"detail":"Insufficient permissions for model registration events"}'))
    assert refused.status == 403 and refused.is_json and "Insufficient permissions" in refused.body_excerpt
    unreachable = hs.event_exchange(url, KEY, error=FakeNotificationError(
        f"... could not connect to {url} ([Errno 111] Connection refused)."))
    assert unreachable.status is None and unreachable.error == "refused"
    for exchange in (ok, refused, unreachable):
        assert KEY.reveal() not in repr(exchange.to_dict())
    with_body = hs.event_exchange(url, KEY, response={}, payload={"model_name": "m", "version": "1"})
    assert with_body.request_body is not None and '"model_name"' in with_body.request_body


def test_cli_environment_holds_the_key_only_in_the_environment() -> None:
    base = {"PATH": "/usr/bin", "HOKUSAI_API_URL": "https://other.test", "MLFLOW_TRACKING_TOKEN": "stale",
            "HOKUSAI_MOCK_MODE": "1"}
    env = hs.cli_environment(api_url="https://registry.example.test", tracking_uri="https://registry.example.test/api/mlflow",
                             key=KEY, timeout_s=10, base=base)
    assert env["PATH"] == "/usr/bin" and env["HOKUSAI_API_KEY"] == KEY.reveal()
    assert env["HOKUSAI_API_ENDPOINT"] == "https://registry.example.test/api"
    assert "HOKUSAI_API_URL" not in env and "HOKUSAI_MOCK_MODE" not in env and "MLFLOW_TRACKING_TOKEN" not in env
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert all(KEY.reveal() not in part for part in hs.cli_command())


def test_parse_cli_output_and_token_ids() -> None:
    out = ("Model registration complete.\n  Model name: hokusai-canary-sdk-cli\n  Version: 4\n  Token ID: HOKUSAI-CHECK-1\n"
           "  Proposal ID: HOKUSAI-CHECK-1\n  MLflow run ID: abc123\n  Status: registered\n")
    parsed = hs.parse_cli_output(out)
    assert parsed == {"Model name": "hokusai-canary-sdk-cli", "Version": "4", "Token ID": "HOKUSAI-CHECK-1",
                      "MLflow run ID": "abc123", "Status": "registered"}
    token = hs.check_token_id()
    assert token != hs.check_token_id() and token.startswith("HOKUSAI-CHECK-") and len(token) <= 64
    assert token.replace("-", "").isalnum()


def test_ci_installs_the_vendored_sdk_wheel_and_the_repository_holds_none_of_it() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert '"${HOKUSAI_SDK_WHEEL_DIR:-../shared/vendor}"' in ci and '"${sdk_wheel}[ml]"' in ci
    assert ci.index("pip install -q -e '.[test]'") < ci.index('"${sdk_wheel}[ml]"'), "the SDK goes in after the project"
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=False).stdout
    if tracked:  # a git checkout: nothing of the wheel is committed
        assert not [f for f in tracked.splitlines() if f.endswith(".whl") or f.startswith("hokusai/")], tracked


def _module_calling_sleep(name: str):
    module = types.ModuleType(name)
    exec("import time\ndef pause(seconds):\n    time.sleep(seconds)\n", module.__dict__)  # noqa: S102
    return module


@pytest.mark.timeout(30)  # a patch that did not take would sleep 1000 s here
def test_sdk_backoff_skipped_only_for_the_sdks_own_code():
    import time

    real = time.sleep
    sdk_code = _module_calling_sleep("hokusai.core.registry")
    other = _module_calling_sleep("hokusai_lookalike")
    with hs.sdk_backoff_skipped() as skipped:
        sdk_code.pause(1000)
        sdk_code.pause(2)
        other.pause(0.001)  # not the SDK's: really sleeps, not collected
    assert skipped == [1000.0, 2.0]
    assert time.sleep is real
