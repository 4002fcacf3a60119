"""End-to-end fixtures: the whole plugin, run in a pytest subprocess (pytester) against the stack.

``stack`` (session scope) is one local reference stack for the whole e2e directory;
``e2e_keys`` (session) are the keys minted on it once (write, read-only, revoked);
``reset_faults`` (function, autouse) switches the stack back to healthy after every test;
``run_live`` (function) runs the shipped live suite (``pytest --pyargs pytest_hokusai.checks
-m live``) as a subprocess with ``--hokusai-target=remote`` pointed at the stack's loopback URLs
and returns the run and its parsed JSON report.

Under pytest-xdist every worker starts its own stack (free ports, its own data dir).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_hokusai.secret import Secret
    from pytest_hokusai.stack.launcher import Stack

#: Environment variables the plugin reads; every run starts with all of them unset, then sets
#: exactly what the test asks for, so the developer's shell can never leak into a run.
KEY_ENV = ("HOKUSAI_API_KEY", "HOKUSAI_READONLY_API_KEY", "HOKUSAI_REVOKED_API_KEY")
SETTING_ENV = (
    "HOKUSAI_TARGET", "HOKUSAI_API_URL", "HOKUSAI_AUTH_URL", "HOKUSAI_TRACKING_URI",
    "HOKUSAI_DIRECT_MLFLOW_URL", "HOKUSAI_SERVICE_ID", "HOKUSAI_REPORT_JSON", "HOKUSAI_REPORT_MD",
    "HOKUSAI_KEEP", "HOKUSAI_TIMEOUT", "HOKUSAI_API_KEY_FILE", "HOKUSAI_STACK_FAULTS",
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "PYTEST_XDIST_AUTO_NUM_WORKERS",
)
#: Per-request timeout passed to every run: short, so faulted runs fail fast.
RUN_TIMEOUT_S = 5
#: Wall-time limit for one subprocess run (pytester kills it after this).
SUBPROCESS_TIMEOUT_S = 180
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"


@dataclass(frozen=True)
class E2EKeys:
    """The keys minted on the session stack (as Secrets; never printed)."""

    write: Secret
    readonly: Secret
    revoked: Secret


@dataclass(frozen=True)
class LiveRun:
    """One subprocess run of the live suite: pytester's result, the JSON report and wall time."""

    result: pytest.RunResult
    report: dict[str, Any] | None
    seconds: float

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines + self.result.errlines)

    def outcomes(self, outcome: str) -> set[str]:
        """Short node ids (``test_x.py::test_y[...]``) of the checks with this JSON outcome."""
        assert self.report is not None
        return {short_id(c["nodeid"]) for c in self.report["checks"] if c["outcome"] == outcome}

    @property
    def failed(self) -> set[str]:
        return self.outcomes("failed") | self.outcomes("error")


def short_id(nodeid: str) -> str:
    """``.../checks/test_auth.py::test_x[a]`` -> ``test_auth.py::test_x[a]`` (rootdir-independent)."""
    path, _, rest = nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1]}::{rest}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The e2e session's local stack (:class:`pytest_hokusai.stack.launcher.Stack`), healthy at start.

    Scope: session. Data dir (logs, SQLite files, artifacts) under pytest's basetemp.
    """
    from pytest_hokusai.stack import start_stack

    with start_stack(data_dir=tmp_path_factory.mktemp("e2e-stack")) as running:
        yield running


@pytest.fixture(scope="session")
def e2e_keys(stack: Stack) -> E2EKeys:
    """A write key (read, write), a read-only key and a revoked key, minted once on the stack.

    Scope: session.
    """
    write = stack.mint_key(scopes=("read", "write"), name="e2e write key")
    readonly = stack.mint_key(scopes=("read",), name="e2e read-only key")
    revoked = stack.mint_key(scopes=("read", "write"), name="e2e revoked key")
    stack.revoke(revoked)
    return E2EKeys(write=write, readonly=readonly, revoked=revoked)


@pytest.fixture(autouse=True)
def reset_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Switch the session stack back to healthy after each test that used it. Scope: function."""
    yield
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        if stack.faults:
            stack.set_faults([])


@pytest.fixture
def run_live(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
             ) -> Callable[..., LiveRun]:
    """Run the live suite in a subprocess; returns a :class:`LiveRun` (result, report, seconds).

    Scope: function. Call it as ``run_live(*extra_args, env=None, faults=None, api_url=None,
    auth_url=None, use_stack=True, expect_report=True)``:

    * ``env``: values for the key variables (``HOKUSAI_API_KEY`` ...); ``None`` unsets one.
      By default (``use_stack``) the three session keys are set.
    * ``faults``: fault switches set on the session stack before the run (reset afterwards).
    * ``api_url`` / ``auth_url``: override the stack's URLs (with ``use_stack=False`` no stack is
      started at all, for runs that must not reach it).

    Every run is checked for ``INTERNALERROR`` in its output, and the JSON report is parsed
    (asserted to exist unless ``expect_report=False``).
    """

    def run(*args: str, env: Mapping[str, str | None] | None = None, faults: list[str] | None = None,
            api_url: str | None = None, auth_url: str | None = None, use_stack: bool = True,
            expect_report: bool = True, timeout: float = SUBPROCESS_TIMEOUT_S) -> LiveRun:
        pytester.makefile(".ini", pytest=PYTEST_INI)
        for name in KEY_ENV + SETTING_ENV:
            monkeypatch.delenv(name, raising=False)
        environ: dict[str, str | None] = {}
        if use_stack:
            stack: Stack = request.getfixturevalue("stack")
            keys: E2EKeys = request.getfixturevalue("e2e_keys")
            api_url = api_url or stack.api_url
            auth_url = auth_url or stack.auth_url
            environ.update({"HOKUSAI_API_KEY": keys.write.reveal(),
                            "HOKUSAI_READONLY_API_KEY": keys.readonly.reveal(),
                            "HOKUSAI_REVOKED_API_KEY": keys.revoked.reveal()})
            if faults is not None:
                stack.set_faults(faults)
        else:
            assert faults is None, "faults need the stack"
        environ.update(env or {})
        for name, value in environ.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        report_path = pytester.path / f"hokusai-report-{time.monotonic_ns()}.json"
        url_args: list[str] = []
        if api_url:
            url_args += ["--hokusai-api-url", api_url]
        if auth_url:
            url_args += ["--hokusai-auth-url", auth_url]
        started = time.monotonic()
        result = pytester.runpytest_subprocess(
            "--pyargs", "pytest_hokusai.checks", "-m", "live", "-p", "no:randomly",
            *url_args, "--hokusai-report-json", str(report_path), f"--hokusai-timeout={RUN_TIMEOUT_S}",
            *args, timeout=timeout,
        )
        seconds = time.monotonic() - started
        output = "\n".join(result.outlines + result.errlines)
        assert "INTERNALERROR" not in output, output
        report: dict[str, Any] | None = None
        if report_path.exists():
            report = json.loads(report_path.read_text(encoding="utf-8"))
        elif expect_report:
            pytest.fail(f"no JSON report at {report_path}; output:\n{output}")
        return LiveRun(result=result, report=report, seconds=seconds)

    return run


def assert_no_raw_key(text: str, *keys: Secret) -> None:
    """No full key appears in the text."""
    for key in keys:
        assert key.reveal() not in text, f"a full API key ({key.masked}) leaked into the output"
