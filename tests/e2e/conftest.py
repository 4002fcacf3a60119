"""End-to-end fixtures: the whole plugin, run in a pytest subprocess (pytester) against the stack.

``stack`` (session scope) is one local reference stack for the whole e2e directory;
``e2e_keys`` (session) are the keys minted on it once (write, read-only, revoked, expired);
``e2e_stack`` (function) is that stack, switched back to healthy before and after the test;
``run_live`` (function) runs the shipped live suite (``pytest --pyargs pytest_hokusai.checks
-m live``) as a subprocess with ``--hokusai-target=remote`` pointed at the stack's loopback URLs
and returns a :class:`LiveRun` (the pytester result, the parsed JSON report, the wall time);
``counting_server`` (function) is a loopback HTTP server that counts every connection, for runs
that must make no request at all.

Under pytest-xdist every worker starts its own stack (free ports, its own data dir).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import string
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.fixedserver import FixedAnswerServer, serving

if TYPE_CHECKING:
    from pytest_hokusai.secret import Secret
    from pytest_hokusai.stack.launcher import Stack

#: Per-request timeout passed to every run: short, so faulted runs fail fast.
RUN_TIMEOUT_S = 5
#: Wall-time limit for one subprocess run (pytester kills it after this).
SUBPROCESS_TIMEOUT_S = 240.0
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
#: Smaller than the defaults (50 MB, 8 clients) so a whole-suite run stays around 20 s; the checks
#: themselves are the same.
SMALL_EDGE_ARGS = ("--hokusai-large-model-mb=4", "--hokusai-concurrency=4")
#: The live checks that need no MLflow client (no mlflow/sklearn import in the subprocess, about
#: 3 s a run instead of 15-20 s): auth, Bearer, proxy, the key edge cases and the two latency checks.
FAST_SELECTION = (
    "-m", "live and not hokusai_sdk and not hokusai_registration",
    "-k", "not mlflow_client and not concurrent and not large_model and not registration_time",
)
#: The fast selection plus the MLflow registration flow (for faults only writes reveal).
WITH_REGISTRATION = (
    "-m", "live and not hokusai_sdk",
    "-k", "not mlflow_client and not concurrent and not large_model and not registration_time",
)


def make_key(prefix: str = "hk_live_") -> str:
    """A well-formed key nobody minted (``hk_live_`` + 32 random alphanumerics), built at run time."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(32))


def short_id(nodeid: str) -> str:
    """``.../checks/test_auth.py::test_x[a]`` -> ``test_auth.py::test_x[a]`` (rootdir-independent)."""
    path, _, rest = nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1]}::{rest}"


@dataclass(frozen=True)
class E2EKeys:
    """The keys minted on the session stack (as Secrets; never printed)."""

    write: Secret
    readonly: Secret
    revoked: Secret
    expired: Secret

    def env(self) -> dict[str, str]:
        return {"HOKUSAI_API_KEY": self.write.reveal(), "HOKUSAI_READONLY_API_KEY": self.readonly.reveal(),
                "HOKUSAI_REVOKED_API_KEY": self.revoked.reveal(), "HOKUSAI_EXPIRED_API_KEY": self.expired.reveal()}


@dataclass(frozen=True)
class LiveRun:
    """One subprocess run of the live suite: pytester's result, the JSON report and the wall time."""

    result: pytest.RunResult
    report: dict[str, Any] | None
    seconds: float

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines + self.result.errlines)

    def outcomes(self, *outcomes: str) -> set[str]:
        """Short node ids (``test_x.py::test_y[...]``) of the checks with one of these JSON outcomes."""
        assert self.report is not None, "no JSON report"
        return {short_id(c["nodeid"]) for c in self.report["checks"] if c["outcome"] in outcomes}

    @property
    def failed(self) -> set[str]:
        return self.outcomes("failed", "error")

    @property
    def primary(self) -> dict[str, Any]:
        """The primary diagnosis (asserted to be the first and the only primary one)."""
        assert self.report is not None, "no JSON report"
        diagnoses = self.report["diagnoses"]
        assert diagnoses, f"no diagnoses; output:\n{self.output}"
        primaries = [d["code"] for d in diagnoses if d["primary"]]
        assert diagnoses[0]["primary"] is True and len(primaries) == 1, diagnoses
        return diagnoses[0]

    def explain(self) -> str:
        """A compact description for assertion messages: verdict, diagnoses, non-passing checks."""
        if self.report is None:
            return f"no report; output tail:\n{self.output[-3000:]}"
        lines = [f"verdict {self.report['verdict']} in {self.seconds:.1f} s"]
        lines += [f"diagnosis {d['code']} primary={d['primary']}: {d['summary']}" for d in self.report["diagnoses"]]
        lines += [f"{c['outcome']} {short_id(c['nodeid'])} diagnosis={c['diagnosis']}"
                  for c in self.report["checks"] if c["outcome"] != "passed"]
        return "\n".join(lines)


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
    """A write key (read, write), a read-only key, a revoked and an expired key, minted once.

    Scope: session.
    """
    write = stack.mint_key(scopes=("read", "write"), name="e2e write key")
    readonly = stack.mint_key(scopes=("read",), name="e2e read-only key")
    revoked = stack.mint_key(scopes=("read", "write"), name="e2e revoked key")
    stack.revoke(revoked)
    expired = stack.mint_key(scopes=("read", "write"), expires_in_seconds=0, name="e2e expired key")
    return E2EKeys(write=write, readonly=readonly, revoked=revoked, expired=expired)


@pytest.fixture
def e2e_stack(stack: Stack) -> Iterator[Stack]:
    """The session stack, healthy when the test starts; faults the test sets are switched off after.

    Scope: function. (Switching faults also empties the API service's validation cache.)
    """
    if stack.faults:
        stack.set_faults([])
    yield stack
    if stack.faults:
        stack.set_faults([])


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every variable the plugin or the MLflow client reads, so the caller's shell cannot leak in."""
    for name in list(os.environ):
        if name == "HOKUSAI_STACK_MLFLOW_PYTHON":
            continue  # which MLflow server this test run's stacks use (CI: the platform's 3.9.0)
        # GITHUB_*: under GitHub Actions a run would append to this job's summary and annotate it
        if name.startswith(("HOKUSAI_", "MLFLOW_", "GITHUB_")) or name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run_live(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
             ) -> Callable[..., LiveRun]:
    """Run the live suite in a subprocess; returns a :class:`LiveRun`.

    Scope: function. Call it as ``run_live(*extra_args, env=None, faults=None, api_url=None,
    auth_url=None, use_stack=True, expect_report=True, hokusai_timeout=RUN_TIMEOUT_S)``:

    * ``env``: values for environment variables (``HOKUSAI_API_KEY`` ...); ``None`` unsets one.
      With ``use_stack`` the session keys are set first (write, read-only, revoked, expired).
    * ``faults``: fault switches set on the session stack before the run (switched off after the test).
    * ``api_url`` / ``auth_url``: other URLs than the stack's; with ``use_stack=False`` no stack is
      started or contacted at all.
    * ``hokusai_timeout``: passed as ``--hokusai-timeout`` (``None``: not passed).
    * ``ini``: the run's pytest.ini text (default :data:`PYTEST_INI`).

    Every run is checked for ``INTERNALERROR`` and for full API keys in its output and report; the
    JSON report is parsed (and must exist unless ``expect_report=False``).
    """

    def run(*args: str, env: Mapping[str, str | None] | None = None, faults: list[str] | None = None,
            api_url: str | None = None, auth_url: str | None = None, use_stack: bool = True,
            expect_report: bool = True, hokusai_timeout: float | None = RUN_TIMEOUT_S,
            timeout: float = SUBPROCESS_TIMEOUT_S, ini: str = PYTEST_INI) -> LiveRun:
        pytester.makefile(".ini", pytest=ini)
        environ: dict[str, str | None] = {}
        if use_stack:
            # before the environment is cleaned: the session stack may start now, and reads
            # HOKUSAI_STACK_MLFLOW_PYTHON (CI runs the e2e tests on MLflow 3.9.0's server that way)
            stack: Stack = request.getfixturevalue("e2e_stack")
            keys: E2EKeys = request.getfixturevalue("e2e_keys")
            api_url = api_url or stack.api_url
            auth_url = auth_url or stack.auth_url
            environ.update(keys.env())
            if faults is not None:
                stack.set_faults(faults)
        else:
            assert faults is None, "faults need the stack"
        clean_environment(monkeypatch)
        environ.update(env or {})
        for name, value in environ.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        report_path = pytester.path / f"hokusai-report-{time.monotonic_ns()}.json"
        cmd: list[str] = ["--pyargs", "pytest_hokusai.checks", "-m", "live", "-p", "no:randomly"]
        if api_url:
            cmd += ["--hokusai-api-url", api_url]
        if auth_url:
            cmd += ["--hokusai-auth-url", auth_url]
        cmd += ["--hokusai-report-json", str(report_path)]
        if hokusai_timeout is not None:
            cmd.append(f"--hokusai-timeout={hokusai_timeout:g}")
        started = time.monotonic()
        result = pytester.runpytest_subprocess(*cmd, *args, timeout=timeout)
        seconds = time.monotonic() - started
        output = "\n".join(result.outlines + result.errlines)
        assert "INTERNALERROR" not in output, output
        report_text = report_path.read_text(encoding="utf-8") if report_path.exists() else None
        secrets_used = [v for n, v in environ.items() if v and n.endswith("_API_KEY") and len(v) > 20]
        for raw in secrets_used:
            assert raw not in output, "a full API key leaked into the run's output"
            assert report_text is None or raw not in report_text, "a full API key leaked into the JSON report"
        if report_text is None and expect_report:
            pytest.fail(f"no JSON report at {report_path}; output:\n{output}")
        report = json.loads(report_text) if report_text is not None else None
        return LiveRun(result=result, report=report, seconds=seconds)

    return run


# -- a loopback server that counts connections, and a closed port --------------------------------
@pytest.fixture
def counting_server() -> Iterator[FixedAnswerServer]:
    """A loopback HTTP server in a thread that answers 200 ``{}``; ``.connections`` and ``.requests``
    say what reached it.

    Scope: function.
    """
    with serving(FixedAnswerServer()) as server:
        yield server


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` for a port that was free a moment ago and has nothing listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the stack's registry, read and emptied straight at MLflow's root ---------------------------------
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _mlflow(stack: Any, method: str, path: str, body: Any = None) -> Any:
    """MLflow's REST API on its own server (no proxy, no key; under /mlflow from MLflow 3.12): what an
    operator with access could use."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{stack.mlflow_rest_url}/api/2.0/mlflow/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def registered_models(stack: Any) -> list[str]:
    found = _mlflow(stack, "GET", "registered-models/search?max_results=1000")
    return sorted(m["name"] for m in found.get("registered_models", []))


@pytest.fixture
def clean_registry(e2e_stack: Any) -> Iterator[Any]:
    """The stack, with every registered model removed before and after (straight at MLflow's root)."""
    def purge() -> None:
        for name in registered_models(e2e_stack):
            _mlflow(e2e_stack, "DELETE", "registered-models/delete", {"name": name})

    purge()
    yield e2e_stack
    e2e_stack.set_faults([])
    purge()


def leftover_names(run: LiveRun) -> set[str]:
    assert run.report is not None
    return {left["name"] for left in run.report["leftovers"] if left["kind"] == "registered_model"}
