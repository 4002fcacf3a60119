"""The public fixtures of pytest-hokusai.

Every fixture is documented with its scope, type and what it gives, so ``pytest --fixtures``
is the reference. Overrides must keep the same scope (a session fixture overridden by a
function-scoped one breaks the session fixtures that depend on it).

Layering: small config fixtures (``hokusai_settings``, ``hokusai_api_key``) feed session-scoped
factories (``hokusai_session``, ``hokusai_mlflow_client``, ``hokusai_toy_model``); the cheap
function-scoped ``hokusai_unique_name`` keeps tests from sharing names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ._keys import STATE_KEY
from .runtime import KEY_MISSING_MESSAGE, HokusaiRun
from .secret import Secret
from .settings import HokusaiKeys, HokusaiSettings

if TYPE_CHECKING:
    from .auth import AuthClient
    from .http import HokusaiSession
    from .registry import ToyModel

__all__ = [
    "hokusai_api_key",
    "hokusai_auth_client",
    "hokusai_keys",
    "hokusai_measure",
    "hokusai_mlflow_client",
    "hokusai_run",
    "hokusai_session",
    "hokusai_settings",
    "hokusai_toy_model",
    "hokusai_unique_name",
]


def _run(request: pytest.FixtureRequest) -> HokusaiRun:
    run: HokusaiRun = request.config.stash[STATE_KEY]
    return run


@pytest.fixture(scope="session")
def hokusai_run(request: pytest.FixtureRequest) -> HokusaiRun:
    """The run object shared by fixtures, diagnosis and reports.

    Scope: session. Type: :class:`pytest_hokusai.runtime.HokusaiRun`.
    Gives access to ``.state`` (a :class:`~pytest_hokusai.state.RunState`: timings, findings,
    recorded exchanges), e.g. ``hokusai_run.state.time("proxy_request_ms", 12.5)``.
    """
    return _run(request)


@pytest.fixture(scope="session")
def hokusai_settings(hokusai_run: HokusaiRun) -> HokusaiSettings:
    """The effective settings of this run.

    Scope: session. Type: :class:`pytest_hokusai.HokusaiSettings` (frozen).
    With ``--hokusai-target=local`` the URLs are those of the bundled stack, which this fixture
    starts on first use (and the session stops). Example::

        def test_api_is_https(hokusai_settings):
            assert hokusai_settings.api_url.startswith("https://")
    """
    return hokusai_run.settings()


@pytest.fixture(scope="session")
def hokusai_keys(hokusai_run: HokusaiRun, hokusai_settings: HokusaiSettings) -> HokusaiKeys:
    """All API keys of the run: ``primary``, ``readonly`` and ``revoked`` (each may be None).

    Scope: session. Type: :class:`pytest_hokusai.HokusaiKeys`. Remote keys come from
    ``HOKUSAI_API_KEY`` (or ``--hokusai-api-key-file``), ``HOKUSAI_READONLY_API_KEY`` and
    ``HOKUSAI_REVOKED_API_KEY``; the local stack mints all three.
    """
    return hokusai_run.keys()


@pytest.fixture(scope="session")
def hokusai_api_key(hokusai_keys: HokusaiKeys) -> Secret:
    """The API key under test, as a :class:`pytest_hokusai.Secret` that never prints.

    Scope: session. Type: :class:`pytest_hokusai.Secret`; ``str()``/``repr()`` show only
    ``hk_live_…wxyz``; ``.reveal()`` gives the raw value. Fails the requesting check with
    ``KEY_MISSING`` or ``KEY_MALFORMED`` before any request is made. Example::

        def test_key_is_live(hokusai_api_key):
            assert hokusai_api_key.environment == "live"
    """
    key = hokusai_keys.primary
    if key is None:
        pytest.fail(KEY_MISSING_MESSAGE, pytrace=False)
    problem = key.format_problem()
    if problem:
        pytest.fail(
            f"KEY_MALFORMED: the API key {key.masked} from {key.source} is malformed: {problem}. "
            "Copy the full key (hk_live_ + 32 letters and digits) from the Hokusai dashboard.",
            pytrace=False,
        )
    return key


@pytest.fixture(scope="session")
def hokusai_session(hokusai_run: HokusaiRun, hokusai_settings: HokusaiSettings,
                    hokusai_api_key: Secret) -> Iterator[HokusaiSession]:
    """An authenticated HTTP session (requests) for the target.

    Scope: session. Type: :class:`pytest_hokusai.http.HokusaiSession`. Sends
    ``Authorization: Bearer <key>``, applies ``--hokusai-timeout`` to every request, retries only
    idempotent requests, and records every exchange (redacted) for the diagnosis and the report.
    ``session.probe(...)`` never raises on network errors. Example::

        def test_health(hokusai_session, hokusai_settings):
            assert hokusai_session.get(hokusai_settings.api_url + "/health").status_code == 200
    """
    from .http import HokusaiSession

    session = HokusaiSession(timeout=hokusai_settings.timeout, recorder=hokusai_run.state.recorder,
                             key=hokusai_api_key, reachability=hokusai_run.reachability)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def hokusai_auth_client(hokusai_session: HokusaiSession, hokusai_settings: HokusaiSettings) -> AuthClient:
    """A client for the auth service (``/health``, ``/api/v1/keys/validate`` in both styles).

    Scope: session. Type: :class:`pytest_hokusai.auth.AuthClient`, using ``hokusai_session``
    and the configured ``--hokusai-service-id``.
    """
    from .auth import AuthClient

    return AuthClient(hokusai_settings.auth_url, hokusai_session, hokusai_settings.service_id)


@pytest.fixture(scope="session")
def hokusai_mlflow_client(hokusai_run: HokusaiRun, hokusai_settings: HokusaiSettings,
                          hokusai_api_key: Secret) -> Iterator[Any]:
    """An ``mlflow.MlflowClient`` pointed at the tracking URI with the key as its token.

    Scope: session. Type: ``mlflow.MlflowClient``. While it is alive, ``MLFLOW_TRACKING_URI``,
    ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (the hokusai timeout) are set; the previous environment is
    restored exactly at the end of the session. MLflow's own retries are cut so that a 503 fails
    in seconds instead of MLflow's ~4-minute retry loop. The client's HTTP calls are recorded.
    """
    from . import warmup

    warmup.join()  # the warm-up thread may be importing mlflow right now
    from .registry import make_client, mlflow_env, record_mlflow_http

    with (mlflow_env(hokusai_settings.tracking_uri, hokusai_api_key, max_retries=0,
                     request_timeout=max(hokusai_settings.timeout, 5.0)),
          record_mlflow_http(hokusai_run.state.recorder)):
        yield make_client(hokusai_settings.tracking_uri)


@pytest.fixture(scope="session")
def hokusai_toy_model() -> ToyModel:
    """A trained toy model: sklearn LogisticRegression on generated data.

    Scope: session. Type: :class:`pytest_hokusai.registry.ToyModel` with ``model``, ``X``,
    ``y``, ``predictions``, ``signature``, ``metrics``, ``params``. Deterministic (seeded).
    """
    from . import warmup

    warmup.join()  # the warm-up thread may be importing sklearn right now
    from .registry import train_toy_model

    return train_toy_model(seed=0)


@pytest.fixture
def hokusai_unique_name() -> Callable[[str], str]:
    """A factory of run-unique, xdist-safe names for experiments and models.

    Scope: function. Type: ``Callable[[str], str]``. Example::

        def test_names(hokusai_unique_name):
            assert hokusai_unique_name("exp") != hokusai_unique_name("exp")
    """
    from .registry import unique_name

    return unique_name


@pytest.fixture
def hokusai_measure(request: pytest.FixtureRequest, hokusai_run: HokusaiRun) -> Callable[[str, float], None]:
    """Record a timing sample for the JSON report's ``timings`` block.

    Scope: function. Type: ``Callable[[str, float], None]``; names end in ``_ms`` or ``_s``
    (``registration_s`` fills the top-level ``registration_s``). Samples travel with the test's
    report, so they reach the controller under pytest-xdist. Example::

        def test_fast(hokusai_measure):
            hokusai_measure("proxy_request_ms", 12.5)
    """
    nodeid = request.node.nodeid

    def measure(name: str, value: float) -> None:
        hokusai_run.measure(name, value, nodeid=nodeid)

    return measure
