"""Registration through the hokusai-ml-platform SDK (import name ``hokusai``), as its README and
contract section 6 document it: the key in ``HOKUSAI_API_KEY``, the API endpoint in
``HOKUSAI_API_ENDPOINT``, the tracking URI from the settings.

* ``ModelRegistry`` connects, and leaves ``MLFLOW_TRACKING_TOKEN`` / ``MLFLOW_TRACKING_URI`` as they were;
* ``register_tokenized_model`` registers a model logged with the stock client, the version carries the
  SDK's tags, and the platform accepted the tokenized-registration event;
* ``hokusai model register`` (the CLI, a subprocess with the key only in its environment) does the same;
* after a remote failure met on purpose, the token and the tracking URI are still the deployment's
  (the 2025-07-16 … 2026-04-18 releases cleared the token and moved to http://localhost:5001: F15).

Without the SDK every check here skips with the working install line (it is not on PyPI).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import time

import pytest

from .. import sdk as hs
from ._support import HOST_SAFE_FILTERS, describe, keep_leftovers, record

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_sdk, *HOST_SAFE_FILTERS]

#: Kept for callers of the first version of this module.
SDK_INSTALL = hs.SDK_INSTALL
SDK_MISSING_MESSAGE = hs.SDK_MISSING_MESSAGE
SDK_WRONG_PACKAGE_MESSAGE = hs.SDK_WRONG_PACKAGE_MESSAGE
METRIC = "accuracy"
#: A path on the API host with nothing behind it: the SDK's MLflow probe fails there (404) on purpose.
FAILING_TRACKING_PATH = "/api/hokusai-check-no-such-mount"
#: Label of the exchanges of that deliberate failure (left out of the diagnosis).
PROVOKED_LABEL = "check:provoked:sdk-fallback"
CLI_TIMEOUT_S = 300
#: The tags ``register_tokenized_model`` sets on the version (contract section 6).
SDK_TAGS = ("hokusai_token_id", "benchmark_metric", "benchmark_value", "hokusai_status",
            "hokusai_proposal_identifier", "mlflow_run_id")


def _sdk():
    module, reason = hs.load_sdk()
    if module is None:
        pytest.skip(reason)
    return module


def _record_failure(hokusai_run, request, step, error):
    """Give the diagnosis the SDK step that failed (best effort; the check's message stands)."""
    with contextlib.suppress(Exception):
        evidence = hokusai_run.ensure_triage()
        known = list(evidence.facts.get(hs.FACT_SDK_FAILURES) or [])
        evidence.add_fact(hs.FACT_SDK_FAILURES, [*known, hs.sdk_failure(step, error, request.node.nodeid)])


def _fail_step(hokusai_run, request, step, error):
    _record_failure(hokusai_run, request, step, error)
    text = " ".join(str(error).split())[:800] or type(error).__name__
    pytest.fail(f"the SDK failed at {step}: {type(error).__name__}: {text}", pytrace=False)


def _mlflow_status():
    """The SDK's own view of its MLflow set-up (``hokusai.config.get_mlflow_status``), if it has one."""
    with contextlib.suppress(Exception):
        return dict(importlib.import_module("hokusai.config").get_mlflow_status())
    return {}


def _versions_for_token(client, name, token_id):
    return [v for v in client.search_model_versions(f"name='{name}'")
            if (v.tags or {}).get("hokusai_token_id") == token_id.upper()]


def _assert_sdk_tags(version, *, token_id, baseline, run_id):
    tags = dict(version.tags or {})
    missing = [t for t in SDK_TAGS if t not in tags]
    assert not missing, f"the registered version {version.name}/{version.version} lacks the SDK's tags {missing}: {tags}"
    expected = {"hokusai_token_id": token_id.upper(), "benchmark_metric": METRIC, "benchmark_value": str(baseline),
                "hokusai_status": "registered", "hokusai_proposal_identifier": token_id.upper(),
                "mlflow_run_id": run_id}
    wrong = {k: (tags.get(k), v) for k, v in expected.items() if tags.get(k) != v}
    assert not wrong, f"the SDK's tags on {version.name}/{version.version} differ (got, expected): {wrong}"


def _assert_local_stack_got_event(hokusai_run, *, model, version, token_id, run_id):
    """On the local target, the stack recorded the event as the SDK built it (remote: the answer only)."""
    info = hokusai_run.local_info()
    if info is None:
        return
    from ..stack.launcher import Stack

    events = [e["payload"] for e in Stack.from_json(info.stack_json).registration_events()
              if e["payload"].get("model_name") == model and e["payload"].get("version") == version]
    assert events, f"the local stack recorded no registration event for {model}/{version}"
    payload = events[-1]
    assert (payload["token_id"], payload["mlflow_run_id"], payload["model_uri"]) == (
        token_id.upper(), run_id, f"models:/{model}/{version}"), payload
    assert payload["tags"].get("hokusai_token_id") == token_id.upper(), payload


def _cleanup(hokusai_run, settings, client, name, version, *, run_ids=(), experiment_ids=()):
    """Remove what the SDK registered, as the other checks do: what cannot be removed is a leftover
    in every report (never a failure of the check)."""
    if settings.keep:
        return
    from ..canary import remove_registration

    keep_leftovers(hokusai_run, remove_registration(client, model=name, versions=[version] if version else [],
                                                    run_ids=run_ids, experiment_ids=experiment_ids))


# -- ModelRegistry ------------------------------------------------------------------------------
def test_sdk_model_registry_connects(hokusai_mlflow_client, hokusai_settings, hokusai_api_key, hokusai_run,
                                     request):
    sdk = _sdk()
    with hs.sdk_environment(api_url=hokusai_settings.api_url, tracking_uri=hokusai_settings.tracking_uri,
                            key=hokusai_api_key):
        token_before = os.environ.get("MLFLOW_TRACKING_TOKEN")
        uri_before = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            registry = sdk.ModelRegistry(tracking_uri=hokusai_settings.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - the SDK's own error is the finding
            _fail_step(hokusai_run, request, "ModelRegistry()", exc)
        token_kept = os.environ.get("MLFLOW_TRACKING_TOKEN") == token_before
        uri_after = os.environ.get("MLFLOW_TRACKING_URI")
        status = _mlflow_status()
        if not token_kept:  # checked before any further call: that call would fail for this reason
            from ..diagnosis import FACT_TRACKING_TOKEN_PRESENT

            with contextlib.suppress(Exception):
                hokusai_run.ensure_triage().add_fact(FACT_TRACKING_TOKEN_PRESENT, False)
            pytest.fail("CLIENT_TOKEN_LOST: ModelRegistry() removed or changed MLFLOW_TRACKING_TOKEN (F15)",
                        pytrace=False)
        try:
            registry.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001
            _fail_step(hokusai_run, request, "ModelRegistry.client.search_experiments (connect)", exc)
    assert uri_after == uri_before, f"ModelRegistry() changed MLFLOW_TRACKING_URI to {uri_after!r}"
    assert registry.tracking_uri == hokusai_settings.tracking_uri, (
        f"the SDK uses the tracking URI {registry.tracking_uri!r}, not the deployment's "
        f"{hokusai_settings.tracking_uri!r}")
    if status:
        assert status.get("configured") and not status.get("is_local"), (
            f"the SDK's MLflow set-up did not connect to the deployment: {status}")


# -- register_tokenized_model --------------------------------------------------------------------
def test_sdk_registers_tokenized_model(hokusai_mlflow_client, hokusai_toy_model, hokusai_unique_name,
                                       hokusai_settings, hokusai_api_key, hokusai_run, request):
    sdk = _sdk()
    import mlflow

    from ..mlflow_config import fluent_uris
    from ..toy_model import PIP_REQUIREMENTS

    client = hokusai_mlflow_client
    token_id = hs.check_token_id()
    baseline = round(float(hokusai_toy_model.metrics["accuracy"]), 4)
    experiment_id = run_id = version = None
    try:
        with hs.sdk_environment(api_url=hokusai_settings.api_url, tracking_uri=hokusai_settings.tracking_uri,
                                key=hokusai_api_key):
            try:
                registry = sdk.ModelRegistry(tracking_uri=hokusai_settings.tracking_uri)
            except Exception as exc:  # noqa: BLE001
                _fail_step(hokusai_run, request, "ModelRegistry()", exc)
            # The model is logged with the stock client (what a third party has), under a runs:/ URI:
            # the SDK takes the run id for the event from it, and the platform requires one.
            experiment_id = client.create_experiment(hokusai_unique_name("hokusai-canary-sdk-exp"))
            run_id = client.create_run(experiment_id, tags={"hokusai.check": "sdk"}).info.run_id
            with fluent_uris(hokusai_settings.tracking_uri), mlflow.start_run(run_id=run_id):
                mlflow.sklearn.log_model(hokusai_toy_model.model, name="model", signature=hokusai_toy_model.signature,
                                         pip_requirements=PIP_REQUIREMENTS)
            model_uri = f"runs:/{run_id}/model"
            url = hs.event_url(sdk, hs.sdk_api_endpoint(hokusai_settings.api_url))
            started = time.monotonic()
            try:
                result = registry.register_tokenized_model(model_uri=model_uri, model_name=hs.CANARY_MODEL,
                                                           token_id=token_id, metric_name=METRIC,
                                                           baseline_value=baseline)
            except Exception as exc:  # noqa: BLE001
                elapsed = (time.monotonic() - started) * 1000.0
                mine = _versions_for_token(client, hs.CANARY_MODEL, token_id)
                version = str(mine[0].version) if mine else None
                if type(exc).__name__ == "NotificationError":
                    payload = hs.event_payload({
                        "model_name": hs.CANARY_MODEL, "version": version, "token_id": token_id.upper(),
                        "proposal_identifier": token_id.upper(), "metric_name": METRIC, "baseline_value": baseline,
                        "mlflow_run_id": run_id, "tags": dict(mine[0].tags or {}) if mine else {}}) if mine else None
                    event = hokusai_run.state.recorder.add(
                        hs.event_exchange(url, hokusai_api_key, error=exc, elapsed_ms=elapsed, payload=payload))
                    where = f"{hs.CANARY_MODEL}/{version}" if version else "no version"
                    pytest.fail(f"the MLflow steps of register_tokenized_model passed ({where} registered), "
                                f"then the SDK's registration event failed: {describe(event)}", pytrace=False)
                _fail_step(hokusai_run, request, "register_tokenized_model (MLflow steps)", exc)
            hokusai_run.state.recorder.add(hs.event_exchange(
                url, hokusai_api_key, response=result.get("notification_response"),
                elapsed_ms=(time.monotonic() - started) * 1000.0, payload=hs.event_payload(result)))
        version = str(result["version"])
        assert result.get("model_name") == hs.CANARY_MODEL, result
        assert result.get("site_status_update") == "succeeded" and result.get("event_emitted") is True, (
            f"the platform did not accept the tokenized-registration event: {result.get('notification_response')}")
        registered = client.get_model_version(hs.CANARY_MODEL, version)
        assert registered.source == model_uri, f"the version's source is {registered.source!r}, not {model_uri!r}"
        _assert_sdk_tags(registered, token_id=token_id, baseline=baseline, run_id=run_id)
        response = result.get("notification_response") or {}
        if "model_id" in response:  # the platform's answer names what it recorded
            assert response["model_id"] == f"{hs.CANARY_MODEL}/{version}/{token_id.upper()}", response
        _assert_local_stack_got_event(hokusai_run, model=hs.CANARY_MODEL, version=version, token_id=token_id,
                                      run_id=run_id)
    finally:
        _cleanup(hokusai_run, hokusai_settings, client, hs.CANARY_MODEL, version,
                 experiment_ids=(experiment_id,) if experiment_id else ())


# -- the CLI ------------------------------------------------------------------------------------
def test_sdk_cli_registers_model(hokusai_mlflow_client, hokusai_settings, hokusai_api_key, hokusai_run, request,
                                 tmp_path):
    _sdk()
    client = hokusai_mlflow_client
    token_id = hs.check_token_id()
    baseline = 0.5
    artifact = tmp_path / "model.txt"
    artifact.write_text("a model artifact registered by pytest-hokusai's SDK check; safe to delete\n")
    argv = [*hs.cli_command(), "model", "register", "--token-id", token_id, "--model-path", str(artifact),
            "--metric", METRIC, "--baseline", str(baseline), "--model-name", hs.CANARY_CLI_MODEL]
    proc = subprocess.Popen(argv, env=hs.cli_environment(api_url=hokusai_settings.api_url,  # the key: only there
                                                         tracking_uri=hokusai_settings.tracking_uri,
                                                         key=hokusai_api_key, timeout_s=hokusai_settings.timeout),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang is stopped whole
    try:
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"`hokusai model register` did not finish in {CLI_TIMEOUT_S} s", pytrace=False)
    from ..secret import redact

    output = redact(f"{stdout}\n{stderr}".strip())
    summary = hs.parse_cli_output(stdout)
    mine = _versions_for_token(client, hs.CANARY_CLI_MODEL, token_id)
    version = str(mine[0].version) if mine else summary.get("Version")
    try:
        if proc.returncode != 0:
            tail = output[-1500:]
            if "notifying the Hokusai site failed" in output:
                url = hs.event_url(None, hs.sdk_api_endpoint(hokusai_settings.api_url))
                hokusai_run.state.recorder.add(hs.event_exchange(url, hokusai_api_key, error=_CliEventError(output)))
            else:
                _record_failure(hokusai_run, request, "hokusai model register (CLI)", RuntimeError(tail))
            pytest.fail(f"`hokusai model register` exited {proc.returncode} "
                        f"({f'version {version} registered' if mine else 'nothing registered'}):\n{tail}",
                        pytrace=False)
        assert mine, f"`hokusai model register` exited 0 but {hs.CANARY_CLI_MODEL} has no version for {token_id}:\n{output[-1500:]}"
        assert "Data pipeline notified successfully" in stdout, (
            f"the CLI did not report the registration event as accepted:\n{output[-1500:]}")
        _assert_sdk_tags(mine[0], token_id=token_id, baseline=baseline, run_id=summary.get("MLflow run ID"))
    finally:
        run_id = (mine[0].tags or {}).get("mlflow_run_id") if mine else summary.get("MLflow run ID")
        _cleanup(hokusai_run, hokusai_settings, client, hs.CANARY_CLI_MODEL, version if mine else None,
                 run_ids=(run_id,) if run_id else ())


class _CliEventError(Exception):
    """The CLI's NotificationError, read back from its output (status and body)."""

    def __init__(self, output: str) -> None:
        super().__init__(output[-600:])
        import re

        match = re.search(r"failed with HTTP (\d{3})\.(?: Response body: (.*))?", output)
        self.status_code = int(match.group(1)) if match else None
        self.response_body = (match.group(2) or "").strip() if match else None


# -- the fallback (F15) -------------------------------------------------------------------------
def test_sdk_fallback_keeps_token_and_tracking_uri(hokusai_mlflow_client, hokusai_settings, hokusai_api_key,
                                                   hokusai_run, request):
    sdk = _sdk()
    import mlflow
    from mlflow import MlflowClient

    failing_uri = hokusai_settings.api_url.rstrip("/") + FAILING_TRACKING_PATH
    recorder = hokusai_run.state.recorder
    with hs.sdk_environment(api_url=hokusai_settings.api_url, tracking_uri=hokusai_settings.tracking_uri,
                            key=hokusai_api_key):
        provoked_from = len(recorder)
        with hs.sdk_backoff_skipped() as backoff:  # its retry pauses change nothing asserted below
            try:
                registry = sdk.ModelRegistry(tracking_uri=failing_uri)
            except Exception:  # noqa: BLE001  # refusing to start on a failing remote is fine: no fallback
                registry = None
        if backoff:
            record(request, "hokusai_sdk_backoff_skipped", f"{sum(backoff):g} s in {len(backoff)} pause(s)")
        # The failure was provoked on purpose: its answers are no finding about the deployment.
        for exchange in recorder.all()[provoked_from:]:
            if exchange.url.startswith(failing_uri):
                exchange.label = PROVOKED_LABEL
        token_kept = os.environ.get("MLFLOW_TRACKING_TOKEN") == hokusai_api_key.reveal()
        token_state = ("unchanged" if token_kept else "removed" if "MLFLOW_TRACKING_TOKEN" not in os.environ
                       else "replaced")
        # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI: the URI it was given is fine, any
        # other one (http://localhost:5001 in F15) is where the SDK moved the client.
        in_use = (mlflow.get_tracking_uri(), getattr(registry, "tracking_uri", failing_uri),
                  os.environ.get("MLFLOW_TRACKING_URI") or failing_uri)
        moved_to = next((u for u in in_use if u not in (failing_uri, hokusai_settings.tracking_uri)), None)
        # What the next call of a third party's stock client meets, with the environment the SDK left.
        follow_up = None
        try:
            MlflowClient(tracking_uri=hokusai_settings.tracking_uri).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001
            follow_up = exc
    unauthenticated = [x for x in recorder.all()[provoked_from:] if x.auth in ("", "none") and x.status == 401]
    if token_kept and moved_to is None and follow_up is None:
        return
    from ..diagnosis import FACT_TRACKING_TOKEN_PRESENT

    with contextlib.suppress(Exception):  # the diagnosis is best effort; the message below stands
        evidence = hokusai_run.ensure_triage()
        evidence.add_fact(FACT_TRACKING_TOKEN_PRESENT, token_kept)
        if moved_to:
            evidence.add_fact(hs.FACT_TRACKING_URI_MOVED_TO, moved_to)
    lines = [f"MLFLOW_TRACKING_TOKEN {token_state}"]
    if moved_to:
        lines.append(f"the MLflow client moved to {moved_to}")
    if unauthenticated:
        lines.append(f"{len(unauthenticated)} request(s) then reached the deployment without Authorization, "
                     f"e.g. {describe(unauthenticated[-1])}")
    elif follow_up is not None:
        lines.append(f"the next stock-client call failed: {' '.join(str(follow_up).split())[:300]}")
    code = "CLIENT_TOKEN_LOST: " if not token_kept or moved_to else ""
    pytest.fail(f"{code}after a remote failure met on purpose ({failing_uri}), the SDK did not keep the "
                f"deployment's token and tracking URI (F15): " + "; ".join(lines), pytrace=False)
