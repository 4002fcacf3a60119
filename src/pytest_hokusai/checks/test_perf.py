"""Performance: key validation latency, proxy request latency and full registration time, against
the ``hokusai_budget_*`` settings, and (with ``--hokusai-baseline``) against an earlier run.

Samples are bounded in count and in time. A budget applies to the p95 of the sample (the
registration time is one measurement); a baseline applies to the p50: more than
``--hokusai-regression-factor`` times the baseline's (and beyond a small noise floor, see
:data:`pytest_hokusai.baseline.NOISE_FLOOR`) fails the check, naming both numbers.

Every validation and proxy request is recorded, so the JSON report's ``auth_validate_ms`` and
``proxy_request_ms`` include these samples; ``registration_s`` is recorded explicitly.

A missed budget or a regression is also recorded on the run's triage evidence (the
``latency_misses`` fact), so the diagnosis names it LATENCY_BUDGET_EXCEEDED with where the time goes.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import pytest

from ..baseline import baseline_p50, load_baseline, regression
from ..errors import SettingsError
from ..state import percentile
from ._support import HOST_SAFE_FILTERS, describe, keep_leftovers, record

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_perf, *HOST_SAFE_FILTERS]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
AUTH_SAMPLES = 20
PROXY_SAMPLES = 30
#: A sample stops early after this long (the budget check then uses what it has).
SAMPLE_TIME_LIMIT_S = 30.0
MIN_SAMPLES = 5


@pytest.fixture(scope="module")
def perf_baseline(hokusai_settings):
    """The ``--hokusai-baseline`` report (a dict), or None when the setting is unset."""
    if hokusai_settings.baseline is None:
        return None
    try:
        return load_baseline(hokusai_settings.baseline)
    except SettingsError as exc:
        pytest.fail(str(exc), pytrace=False)


def _sample(count, call):
    """Up to ``count`` latencies from ``call()`` (which returns one, or raises), bounded in time."""
    samples: list[float] = []
    deadline = time.monotonic() + SAMPLE_TIME_LIMIT_S
    while len(samples) < count and (len(samples) < MIN_SAMPLES or time.monotonic() < deadline):
        samples.append(call())
    return samples


def _record_miss(hokusai_run, measure, nodeid, *, p50, p95, n, budget=None, before=None, factor=None, phases=None):
    """Give the diagnosis the missed budget / regression (TriageEvidence ``latency_misses`` fact);
    best effort, never hides the check's own failure."""
    with contextlib.suppress(Exception):
        from ..diagnosis import latency_miss

        hokusai_run.ensure_triage().add_latency_miss(latency_miss(
            measure, p50=p50, p95=p95, n=n, nodeid=nodeid, budget=budget, baseline_p50=before, factor=factor,
            phases=phases))


def _judge(measure, what, samples, budget_ms, baseline, factor, request, hokusai_run):
    nodeid = request.node.nodeid
    p50, p95 = statistics.median(samples), percentile(samples, 95)
    record(request, f"hokusai_{measure}", f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, n={len(samples)}")
    problems = []
    over = p95 > budget_ms
    if over:
        problems.append(f"{what} p95 {p95:.0f} ms over the {budget_ms:g} ms budget "
                        f"(p50 {p50:.0f} ms, n={len(samples)})")
    before = baseline_p50(baseline, measure) if baseline is not None else None
    slower = regression(measure, before, p50, factor) if baseline is not None else None
    if slower:
        problems.append(f"{what} regressed since the baseline: {slower}")
    if problems:
        _record_miss(hokusai_run, measure, nodeid, p50=p50, p95=p95, n=len(samples),
                     budget=budget_ms if over else None, before=before if slower else None,
                     factor=factor if slower else None)
        pytest.fail("; ".join(problems), pytrace=False)


def test_auth_validation_latency(hokusai_auth_client, hokusai_api_key, hokusai_settings, perf_baseline,
                                 hokusai_run, request):
    def validate():
        outcome = hokusai_auth_client.validate(hokusai_api_key, style="header",
                                               service_id=hokusai_settings.service_id, label="check:perf-validate")
        assert outcome.status == 200, f"validation failed during the latency sample: {outcome.exchange.summary()}"
        return outcome.exchange.elapsed_ms

    samples = _sample(AUTH_SAMPLES, validate)
    _judge("auth_validate_ms", "auth validation", samples, hokusai_settings.budget_auth_ms, perf_baseline,
           hokusai_settings.regression_factor, request, hokusai_run)


def test_proxy_request_latency(hokusai_session, hokusai_settings, perf_baseline, hokusai_run, request):
    def search():
        result = hokusai_session.probe("GET", hokusai_settings.tracking_uri + SEARCH, label="check:perf-proxy")
        assert result.status == 200, f"a proxied request failed during the latency sample: {describe(result)}"
        return result.exchange.elapsed_ms

    samples = _sample(PROXY_SAMPLES, search)
    _judge("proxy_request_ms", "proxy", samples, hokusai_settings.budget_proxy_ms, perf_baseline,
           hokusai_settings.regression_factor, request, hokusai_run)


def test_registration_time(hokusai_mlflow_client, hokusai_toy_model, hokusai_unique_name, hokusai_settings,
                           hokusai_measure, perf_baseline, hokusai_run, request):
    from ..canary import canary_name, remove_registration
    from ..registry import register_toy_model

    name = canary_name("perf")  # a new version of the canary model (see pytest_hokusai.canary)
    experiment = hokusai_unique_name("hokusai-perf-exp")
    registration = None
    partial = None
    started = time.monotonic()
    try:
        registration = register_toy_model(hokusai_mlflow_client, hokusai_toy_model, name=name,
                                          experiment_name=experiment)
        took = time.monotonic() - started
    except Exception as exc:
        partial = getattr(exc, "partial", None)
        raise
    finally:
        made = registration or partial
        if not hokusai_settings.keep:  # what cannot be removed is a leftover, never this check's failure
            keep_leftovers(hokusai_run, remove_registration(
                hokusai_mlflow_client, model=name, versions=[made.version] if made and made.version else [],
                model_created=bool(made and made.model_created),
                experiment_ids=[made.experiment_id] if made and made.experiment_id else [],
                experiment_names=[experiment]))
    hokusai_measure("registration_s", took)
    phases = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in registration.timings.items())
    record(request, "hokusai_registration_s", f"{took:.2f} s ({phases})")
    failures = []
    budget = hokusai_settings.budget_registration_s
    over = took > budget
    if over:
        failures.append(f"full registration took {took:.1f} s, over the {budget:g} s budget ({phases})")
    factor = hokusai_settings.regression_factor
    before = baseline_p50(perf_baseline, "registration_s") if perf_baseline is not None else None
    slower = regression("registration_s", before, took, factor) if perf_baseline is not None else None
    if slower:
        failures.append(f"registration regressed since the baseline: {slower}")
    if failures:
        _record_miss(hokusai_run, "registration_s", request.node.nodeid, p50=took, p95=took, n=1,
                     budget=budget if over else None, before=before if slower else None,
                     factor=factor if slower else None, phases=registration.timings)
        pytest.fail("; ".join(failures), pytrace=False)
