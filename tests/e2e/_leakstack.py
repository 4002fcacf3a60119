"""Shared helpers for the key-leak and browser e2e tests (private to test_leaks.py / test_browser.py).

* :func:`session_stack`: one local reference stack for the session. It is the e2e conftest's
  session ``stack`` fixture when the directory defines one (so the directory starts one stack, not
  two), else a stack started here and stopped when the session ends.
* :func:`run_scenario`: the shipped live suite in a pytester subprocess with every output turned on
  (``-vv --showlocals -rA``, DEBUG logs, live logs, HTML, JUnit with captured output, JSON, Markdown),
  all files written under the pytester directory.
* :func:`cached_scenario`: the ``passing`` and ``faulted`` runs, made once per session and shared by
  both test files (the browser test opens the same HTML the leak test scans).
* :func:`find_leaks`: every place a raw key or its secret part appears in a run's outputs.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import re
import secrets
import socket
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_hokusai.secret import Secret
    from pytest_hokusai.stack.launcher import Stack

KEY_PREFIX = "hk_live_"
#: Every output the run can produce, at its most talkative.
LOUD_FLAGS = ("-vv", "--showlocals", "-rA", "--log-level=DEBUG", "--log-cli-level=DEBUG",
              # captured stdout/stderr/logs of every test go into the JUnit XML too
              "-o", "junit_logging=all", "-o", "junit_log_passing_tests=true")
#: Per-request timeout of the runs (seconds): short, so the unreachable and faulted runs end fast.
REQUEST_TIMEOUT_S = 5
#: Wall-time limit of one subprocess run (pytester kills it after this).
SUBPROCESS_TIMEOUT_S = 240
#: Faults each cached scenario runs with.
SCENARIO_FAULTS: dict[str, list[str]] = {"passing": [], "faulted": ["wrong-service-id"]}

_SUMMARY_PREFIXES = ("FAILED ", "ERROR ", "PASSED ", "XFAIL ", "XPASS ", "SKIPPED ", "=", "hokusai", "verdict",
                     "ROOT CAUSE", "also:", "    evidence:", "    fix:")
_STACK_KEY = pytest.StashKey["Stack"]()
_WRITE_KEY = pytest.StashKey["Secret"]()
_RUNS_KEY = pytest.StashKey[dict[str, "ScenarioRun"]]()


@dataclass
class ScenarioRun:
    """One subprocess run: where its files are, what it printed, and the key it had."""

    name: str
    path: Path  # the pytester directory: the run's cwd, ini, stdout/stderr files and outputs
    out_dir: Path  # r.html, j.xml, r.json, r.md
    ret: int
    stdout: str
    stderr: str
    key: Secret
    seconds: float
    report: dict[str, Any] | None = field(default=None)

    @property
    def html_path(self) -> Path:
        return self.out_dir / "r.html"

    def describe(self) -> str:
        """Return code, duration and the tail of the output (for assertion messages; redacted)."""
        from pytest_hokusai.secret import redact

        lines = redact(self.stdout + "\n" + self.stderr).splitlines()
        summary = [line for line in lines if line.startswith(_SUMMARY_PREFIXES)][-40:]
        tail = "\n".join(summary + ["..."] + lines[-15:])
        return f"{self.name}: exit {self.ret} after {self.seconds:.1f} s; summary lines and output tail:\n{tail}"


# -- keys and ports --------------------------------------------------------------------------------
def random_key() -> Secret:
    """A well-formed key that no service knows: ``hk_live_`` + 32 random letters and digits."""
    from pytest_hokusai.secret import Secret

    alphabet = string.ascii_letters + string.digits
    return Secret(KEY_PREFIX + "".join(secrets.choice(alphabet) for _ in range(32)), source="test")


def closed_port() -> int:
    """A loopback port nothing listens on (bound to find it free, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the stack -------------------------------------------------------------------------------------
def session_stack(request: pytest.FixtureRequest) -> Stack:
    """The session's local stack: the e2e conftest's ``stack`` fixture if there is one, else our own."""
    config = request.config
    if _STACK_KEY in config.stash:
        return config.stash[_STACK_KEY]
    stack: Stack
    try:
        stack = request.getfixturevalue("stack")
    except pytest.FixtureLookupError:
        from pytest_hokusai.stack.launcher import launch_stack

        tmp_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        stack = launch_stack(data_dir=tmp_factory.mktemp("leak-stack"))
        request.session.addfinalizer(stack.stop)
        request.session.addfinalizer(lambda: config.stash.__delitem__(_STACK_KEY))
    config.stash[_STACK_KEY] = stack
    return stack


def session_write_key(request: pytest.FixtureRequest, stack: Stack) -> Secret:
    """A (read, write) key minted once per session on the session stack."""
    config = request.config
    if _WRITE_KEY not in config.stash:
        config.stash[_WRITE_KEY] = stack.mint_key(scopes=("read", "write"), name="leak-test write key")
    return config.stash[_WRITE_KEY]


# -- runs ------------------------------------------------------------------------------------------
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell reaches the run: no HOKUSAI_*/MLFLOW_TRACKING_* variables."""
    for name in list(os.environ):
        if name.startswith(("HOKUSAI_", "MLFLOW_TRACKING_", "GITHUB_")) or name == "PYTEST_ADDOPTS":
            monkeypatch.delenv(name, raising=False)


def run_scenario(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, name: str, key: Secret,
                 api_url: str | None, auth_url: str | None, args: tuple[str, ...] | None = None) -> ScenarioRun:
    """Run pytest in a subprocess with :data:`LOUD_FLAGS` and every report written under ``pytester.path``.

    ``args`` default to the shipped live suite (``--pyargs pytest_hokusai.checks -m live``) pointed
    at ``api_url`` / ``auth_url``; the key is passed only through ``HOKUSAI_API_KEY``.
    """
    pytester.makeini("[pytest]\n")  # pins the rootdir; no addopts, so `-m live` is ours alone
    _clean_environment(monkeypatch)
    monkeypatch.setenv("HOKUSAI_API_KEY", key.reveal())
    out_dir = pytester.mkdir("out")
    # the hand-off's outputs are scanned too: issue reports, the GitHub step summary, annotations
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(out_dir / "step-summary.md"))
    if args is None:
        args = ("--pyargs", "pytest_hokusai.checks", "-m", "live")
    url_args: list[str] = []
    if api_url:
        url_args.append(f"--hokusai-api-url={api_url}")
    if auth_url:
        url_args.append(f"--hokusai-auth-url={auth_url}")
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        # file order: the unreachable scenario expects its first check to send the key as Bearer
        *args, *url_args, "-p", "no:randomly", f"--hokusai-timeout={REQUEST_TIMEOUT_S}", *LOUD_FLAGS,
        f"--html={out_dir / 'r.html'}", "--self-contained-html", f"--junitxml={out_dir / 'j.xml'}",
        f"--hokusai-report-json={out_dir / 'r.json'}", f"--hokusai-report-md={out_dir / 'r.md'}",
        f"--hokusai-report-issues={out_dir / 'issues'}", timeout=SUBPROCESS_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    report_path = out_dir / "r.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
    return ScenarioRun(name=name, path=pytester.path, out_dir=out_dir, ret=int(result.ret),
                       stdout="\n".join(result.outlines), stderr="\n".join(result.errlines), key=key,
                       seconds=seconds, report=report)


def cached_scenario(request: pytest.FixtureRequest, name: str) -> ScenarioRun:
    """The ``passing`` or ``faulted`` run of the live suite against the session stack, made once per
    session (by whichever test asks first, in its own pytester directory)."""
    runs = request.config.stash.setdefault(_RUNS_KEY, {})
    if name in runs:
        return runs[name]
    stack = session_stack(request)
    key = session_write_key(request, stack)
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    stack.set_faults(SCENARIO_FAULTS[name])
    try:
        run = run_scenario(pytester, monkeypatch, name=name, key=key, api_url=stack.api_url,
                           auth_url=stack.auth_url)
    finally:
        if stack.faults:
            stack.set_faults([])
    runs[name] = run
    return run


# -- scanning --------------------------------------------------------------------------------------
def needles(key: Secret) -> dict[str, bytes]:
    """What must never appear: the whole key, and its secret part (the characters after the prefix)."""
    raw = key.reveal()
    assert raw.startswith(KEY_PREFIX) and len(raw) == len(KEY_PREFIX) + 32, "test keys are hk_live_ + 32"
    return {"full key": raw.encode(), "secret part": raw[len(KEY_PREFIX):].encode()}


def _all_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.is_file() and not path.is_symlink():
                yield path


_B64 = re.compile(rb"base64,([A-Za-z0-9+/=\s]{12,})")
_JSONBLOB = re.compile(r'data-jsonblob="([^"]*)"')


def _decoded_views(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    """Encoded payloads inside a file that a byte scan cannot see through: base64 ``data:`` URIs
    (pytest-html embeds text extras that way) and the HTML report's JSON blob, unescaped."""
    for i, match in enumerate(_B64.finditer(data)):
        try:
            yield f"base64 payload #{i + 1}", base64.b64decode(re.sub(rb"\s", b"", match.group(1)))
        except (binascii.Error, ValueError):
            continue
    if path.suffix == ".html":
        text = data.decode("utf-8", errors="replace")
        for blob in _JSONBLOB.findall(text):
            decoded = json.dumps(json.loads(html.unescape(blob)), ensure_ascii=False)
            yield "pytest-html JSON blob (decoded)", decoded.encode()
            for i, match in enumerate(_B64.finditer(decoded.encode())):
                try:
                    yield f"JSON blob base64 #{i + 1}", base64.b64decode(re.sub(rb"\s", b"", match.group(1)))
                except (binascii.Error, ValueError):
                    continue


def _hits(where: str, data: bytes, targets: dict[str, bytes]) -> list[str]:
    found = []
    spans: list[tuple[int, int]] = []  # what is already reported (the secret part of a full key once)
    for what, needle in targets.items():
        start = data.find(needle)
        while start != -1:
            if any(lo <= start < hi for lo, hi in spans):
                start = data.find(needle, start + 1)
                continue
            spans.append((start, start + len(needle)))
            line_no = data.count(b"\n", 0, start) + 1
            line_start = data.rfind(b"\n", 0, start) + 1
            line_end = data.find(b"\n", start)
            line = data[line_start: line_end if line_end != -1 else len(data)]
            # show the line with the needle masked, so the report of a leak is not itself a leak
            shown = line.replace(needle, b"<" + what.replace(" ", "-").encode() + b">")[:300]
            found.append(f"{where}:{line_no}: {what}: {shown.decode('utf-8', errors='replace')}")
            start = data.find(needle, start + 1)
    return found


def find_leaks(run: ScenarioRun, *, extra_texts: dict[str, str] | None = None) -> list[str]:
    """Every occurrence of the run's key (or its secret part) in its stdout, stderr and in every byte
    of every file under its directory, as ``where:line: what: line-with-the-key-masked``."""
    targets = needles(run.key)
    leaks: list[str] = []
    texts = {"stdout (as pytester read it)": run.stdout, "stderr (as pytester read it)": run.stderr,
             **(extra_texts or {})}
    for where, text in texts.items():
        leaks += _hits(where, text.encode("utf-8", errors="surrogateescape"), targets)
    scanned = 0
    for path in _all_files(run.path):
        data = path.read_bytes()
        scanned += 1
        rel = str(path.relative_to(run.path))
        leaks += _hits(rel, data, targets)
        for label, decoded in _decoded_views(path, data):
            leaks += _hits(f"{rel} [{label}]", decoded, targets)
    assert scanned >= 4, f"only {scanned} files under {run.path}: the run wrote almost nothing"
    return leaks


def html_transcripts(html_path: Path) -> str:
    """All HTML extras (the per-test HTTP transcripts) of a pytest-html report, decoded, joined."""
    text = html_path.read_text(encoding="utf-8")
    match = _JSONBLOB.search(text)
    assert match, f"{html_path} has no data-jsonblob (not a pytest-html 4 report?)"
    blob = json.loads(html.unescape(match.group(1)))
    parts = []
    for reports in blob.get("tests", {}).values():
        for report in reports:
            for extra in report.get("extras") or []:
                if extra.get("format_type") == "html":
                    parts.append(str(extra.get("content", "")))
    return "\n".join(parts)
