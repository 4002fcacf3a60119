"""SUITE_ERROR: a check that crashed is not a deployment finding.

A failing live check is either an answer from the deployment that the check judged wrong (an
assertion, ``pytest.fail``, an HTTP or MLflow client error, a refused connection, a timeout), or
something the suite raised by itself: a bug in a check or fixture, a library the checks drive
misbehaving in this environment, or the host project's pytest settings (``filterwarnings = error``
turning a library's warning into an exception). Only the first kind may carry a deployment's code;
the second gets ``SUITE_ERROR`` with its exception.

:func:`is_deployment_answer` makes that call from the exception alone (its class, the classes of
its causes, and whether a warning was turned into an error anywhere in the chain);
:func:`suite_error_for_check` builds one check's finding; :func:`match_suite_error` is the rule's
matcher over the run's :data:`FACT_SUITE_ERRORS`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

from ...secret import redact
from ...state import Finding
from ..catalog import TEXTS
from ..evidence import TriageEvidence
from .base import Match

__all__ = [
    "FACT_SUITE_ERRORS",
    "SUITE_CODE",
    "is_deployment_answer",
    "match_suite_error",
    "suite_error_for_check",
    "suite_error_line",
    "suite_run_finding",
]

SUITE_CODE = "SUITE_ERROR"
#: Evidence fact: the run's suite errors, one line each (``nodeid (phase): ExcType: message``).
FACT_SUITE_ERRORS = "suite_errors"
#: Top-level packages whose exceptions report what the deployment answered (or that it did not):
#: the HTTP stack, the MLflow client and the hokusai SDK.
ANSWER_PACKAGES = frozenset({"requests", "urllib3", "mlflow", "hokusai", "httpx", "httpcore"})
#: Network-level failures: the deployment did not answer (HOST_UNREACHABLE, TLS_ERROR territory).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, ssl.SSLError, socket.gaierror)
_MESSAGE_CHARS = 300


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its explicit causes (``__cause__``, a ``cause`` attribute) and contexts."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, getattr(current, "cause", None), current.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _from_answer_package(exc: BaseException) -> bool:
    for cls in type(exc).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module.split(".")[0] in ANSWER_PACKAGES or module == "http.client":
            return True
    return False


def is_deployment_answer(exc: BaseException) -> bool:
    """True when ``exc`` reports an answer (or the lack of one) from the deployment.

    False for a warning turned into an error anywhere in the chain (the host's warning filters),
    and for any exception that neither a check's verdict (assertion, ``pytest.fail``) nor the HTTP /
    MLflow / SDK client raised about what came back.
    """
    import pytest

    chain = list(_chain(exc))
    if any(isinstance(e, Warning) for e in chain):
        return False
    if isinstance(exc, (AssertionError, pytest.fail.Exception)):
        return True
    return any(isinstance(e, NETWORK_ERRORS) or _from_answer_package(e) for e in chain)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "\u2026"


def _described(exc: BaseException) -> str:
    """``ExcType: message`` of the exception that matters (a wrapped warning rather than its wrapper)."""
    shown = next((e for e in _chain(exc) if isinstance(e, Warning)), exc)
    message = _first_line(shown)
    return f"{type(shown).__name__}: {message}" if message else type(shown).__name__


def suite_error_line(nodeid: str, when: str, exc: BaseException) -> str:
    """One evidence line: ``<nodeid> (setup): PytestWarning: ...`` (redacted)."""
    phase = {"setup": "in a fixture", "call": "in the check", "teardown": "in a fixture's teardown"}.get(when, when)
    return redact(f"{nodeid} ({phase}): {_described(exc)}")


def suite_error_for_check(nodeid: str, when: str, exc: BaseException) -> Finding | None:
    """The SUITE_ERROR finding of one failing check, or ``None`` when the deployment answered."""
    if is_deployment_answer(exc):
        return None
    text = TEXTS[SUITE_CODE]
    if any(isinstance(e, Warning) for e in _chain(exc)):
        why = ("a warning that the host project's warning filters (filterwarnings = error or -W error) turned "
               "into an error")
    else:
        why = "an error that is no answer from the deployment"
    where = {"setup": "a fixture of this check", "teardown": "a fixture's teardown"}.get(when, "the check")
    summary = redact(f"{where[0].upper()}{where[1:]} raised {why}: {_described(exc)}.")
    return Finding(code=SUITE_CODE, category=text.category, summary=summary,
                   evidence=[suite_error_line(nodeid, when, exc)], remediation=text.fix)


def match_suite_error(e: TriageEvidence) -> Match | None:
    """The run-level SUITE_ERROR: every suite error the checks raised (fact :data:`FACT_SUITE_ERRORS`)."""
    lines: Any = e.facts.get(FACT_SUITE_ERRORS)
    if not isinstance(lines, (list, tuple)) or not lines:
        return None
    items = [str(line) for line in lines]
    count = len(items)
    summary = (f"{count} live check{'s' if count != 1 else ''} raised an error that is no answer from the "
               "deployment (the suite, a fixture or the host project's pytest settings); "
               "they say nothing about the deployment.")
    return Match(summary, items[:10] + ([f"... and {count - 10} more"] if count > 10 else []))


def suite_run_finding(lines: list[str]) -> Finding:
    """The run's primary SUITE_ERROR when the diagnosis produced nothing else (e.g. it could not run)."""
    found = match_suite_error(TriageEvidence(facts={FACT_SUITE_ERRORS: list(lines)}))
    assert found is not None
    text = TEXTS[SUITE_CODE]
    return Finding(code=SUITE_CODE, category=text.category, summary=redact(found.summary),
                   evidence=[redact(str(x)) for x in found.evidence if x is not None], remediation=text.fix,
                   primary=True)
