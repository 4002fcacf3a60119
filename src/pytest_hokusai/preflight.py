"""Before any check runs: is the MLflow client supported, and is the primary key usable?

Both are usage errors that stop a live run before a request is sent (a deploy gate must never pass
by skipping); the key errors still leave a JSON/Markdown verdict and the hand-off for the pipeline.
"""

from __future__ import annotations

import pytest

from .run_reports import StdoutWriter, print_handoff, run_handoff, write_reports
from .runtime import HokusaiRun
from .settings import HokusaiSettings
from .state import Finding

__all__ = ["SUPPORTED_MLFLOW", "key_usage_error", "mlflow_version_problem", "selects_live",
           "write_key_missing_reports"]

#: [min, max) of the MLflow client versions the checks know: from 3.9 (the platform's server), no upper
#: bound (client_version.MIN_MLFLOW, SUPPORTED_RANGE)
SUPPORTED_MLFLOW = ((3, 9), None)


def selects_live(config: pytest.Config) -> bool:
    """True when the ``-m`` expression asks for the live checks."""
    markexpr = str(config.getoption("markexpr", "") or "")
    return "live" in markexpr and "not live" not in markexpr


def mlflow_version_problem() -> str | None:
    """Why the installed MLflow client cannot run the checks, or ``None`` when it can."""
    from .client_version import mlflow_version_problem as problem  # reads mlflow or mlflow-skinny

    return problem()


def _write_usage_error_verdict(run: HokusaiRun, settings: HokusaiSettings, finding: Finding) -> None:
    run.state.findings = [finding]
    write_reports(run, settings)
    # no terminal summary follows a usage error: the hand-off's lines go straight to stdout
    print_handoff(StdoutWriter(), run_handoff(run, settings))


def write_key_missing_reports(run: HokusaiRun, settings: HokusaiSettings) -> None:
    """On a KEY_MISSING usage error, still leave a JSON/Markdown verdict for the pipeline."""
    from .diagnosis import RULES

    rule = RULES["KEY_MISSING"]
    _write_usage_error_verdict(run, settings, Finding(
        code="KEY_MISSING", category=rule.category, primary=True,
        summary="No Hokusai API key is configured, so no check could run.",
        evidence=["HOKUSAI_API_KEY is unset and no --hokusai-api-key-file was given"], remediation=rule.fix))


def key_usage_error(run: HokusaiRun, settings: HokusaiSettings, *, write_reports: bool = True) -> str | None:
    """The usage-error message when the primary key cannot be used (missing or malformed) for a
    remote target, after leaving a JSON/Markdown verdict for the pipeline; ``None`` when it can.
    Nothing is sent: a malformed key is refused before any request, like a missing one."""
    if settings.is_local:
        return None
    key = run.base_keys.primary
    if key is None:
        if write_reports:
            write_key_missing_reports(run, settings)
        from .runtime import KEY_MISSING_MESSAGE

        return KEY_MISSING_MESSAGE
    problem = key.format_problem()
    if not problem:
        return None
    if write_reports:
        from .diagnosis import RULES

        rule = RULES["KEY_MALFORMED"]
        run.state.target = run.target_block()
        _write_usage_error_verdict(run, settings, Finding(
            code="KEY_MALFORMED", category=rule.category, primary=True,
            summary=f"The API key {key.masked} from {key.source} is malformed ({problem}); "
                    "it was not sent and no check ran.",
            evidence=[f"key {key.masked} from {key.source}: {problem}"], remediation=rule.fix))
    from .runtime import key_malformed_message

    return key_malformed_message(key, problem)
