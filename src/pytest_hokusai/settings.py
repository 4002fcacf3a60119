"""One frozen :class:`HokusaiSettings`, resolved command line > environment > ini > default.

Every setting has three spellings: ``--hokusai-<name>`` on the command line, ``hokusai_<name>``
in the ini file and ``HOKUSAI_<NAME>`` in the environment. :func:`get_settings` resolves them once
per run and stores the result in ``config.stash``; an invalid value raises
:class:`pytest.UsageError` naming the setting, where the value came from and what to do.

API keys are never settings values: they come from the environment (``HOKUSAI_API_KEY``,
``HOKUSAI_READONLY_API_KEY``, ``HOKUSAI_REVOKED_API_KEY``) or from ``--hokusai-api-key-file``,
never from a command-line value that would show in the process list.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import SettingsError
from .secret import Secret, SecretUrl, mask_url

if TYPE_CHECKING:
    import pytest

__all__ = [
    "SETTINGS",
    "HokusaiKeys",
    "HokusaiSettings",
    "SettingSpec",
    "extra_key",
    "is_loopback_host",
    "resolve_keys",
    "resolve_settings",
]

TARGETS = ("remote", "local")
DEFAULT_API_URL = "https://registry.hokus.ai"
DEFAULT_AUTH_URL = "https://auth.hokus.ai"

KEY_ENV = "HOKUSAI_API_KEY"
READONLY_KEY_ENV = "HOKUSAI_READONLY_API_KEY"
REVOKED_KEY_ENV = "HOKUSAI_REVOKED_API_KEY"
EXPIRED_KEY_ENV = "HOKUSAI_EXPIRED_API_KEY"


# -- value parsers: each returns the parsed value or raises ValueError("why; the fix") ----------
def _parse_target(raw: str) -> str:
    value = raw.strip().lower()
    if value not in TARGETS:
        raise ValueError(f"must be one of {', '.join(TARGETS)}")
    return value


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as https://registry.hokus.ai")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"uses plain http:// for the non-loopback host {parts.hostname!r}, which would send the API "
            "key unencrypted; use https://"
        )
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    return value


def _parse_service_id(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a non-empty word such as platform")
    return value


def _parse_path(raw: str) -> Path:
    value = raw.strip()
    if not value:
        raise ValueError("must be a file path")
    return Path(value).expanduser()


def _parse_python(raw: str) -> Path:
    path = _parse_path(raw)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ValueError("must be the path of an executable python in an environment with MLflow's server "
                         "installed, e.g. /opt/mlflow-3.9/bin/python")
    return path


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _parse_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds such as 10") from None
    if not 0 < value <= 600:
        raise ValueError("must be more than 0 and at most 600 seconds")
    return value


def _number_parser(unit: str, example: str, *, low: float, high: float, low_inclusive: bool = False,
                   integer: bool = False) -> Callable[[str], float]:
    """A parser for a bounded number (``integer``: a whole number); errors name the range and unit."""
    kind = "a whole number" if integer else "a number"
    lower = "at least" if low_inclusive else "more than"

    def parse(raw: str) -> float:
        try:
            value = int(str(raw).strip()) if integer else float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be {kind} such as {example} ({unit})") from None
        in_range = (low <= value if low_inclusive else low < value) and value <= high  # False for NaN
        if not in_range:
            raise ValueError(f"must be {lower} {low:g} and at most {high:g} ({unit})")
        return value

    return parse


def _parse_codes(raw: str) -> tuple[str, ...]:
    """``CODE[,CODE]`` of the diagnosis catalogue, upper-cased, duplicates dropped, order kept."""
    from .diagnosis.catalog import CODES

    names = [part.strip().upper() for part in raw.replace(";", ",").replace(" ", ",").split(",") if part.strip()]
    unknown = [name for name in names if name not in CODES]
    if unknown:
        raise ValueError(f"unknown diagnosis code(s) {', '.join(unknown)}; valid codes: {', '.join(CODES)}")
    return tuple(dict.fromkeys(names))


_parse_budget_ms = _number_parser("milliseconds", "1000", low=0, high=600_000)
_parse_budget_s = _number_parser("seconds", "120", low=0, high=86_400)
_parse_concurrency = _number_parser("clients", "8", low=1, high=64, low_inclusive=True, integer=True)
_parse_megabytes = _number_parser("megabytes", "50", low=0, high=10_240)
_parse_wait_s = _number_parser("seconds", "10", low=0, high=3_600, low_inclusive=True)
_parse_factor = _number_parser("times the baseline", "2.0", low=1, high=1_000)


def _parse_notify_url(raw: str) -> SecretUrl:
    # The URL is a credential (a webhook's path or query is its secret): no message here quotes it.
    value = raw.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError("must be an absolute http(s) URL such as https://hooks.slack.com/services/T000/B000/XXXX") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("must be an absolute http(s) URL such as https://hooks.slack.com/services/T000/B000/XXXX")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(f"uses plain http:// for the non-loopback host {host!r}, which would send the webhook's "
                         "secret unencrypted; use https://")
    return SecretUrl(value)


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is spelt, parsed and documented."""

    name: str  #: dashed name: ``api-url`` -> ``--hokusai-api-url``, ``hokusai_api_url``, ``HOKUSAI_API_URL``
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = False  #: a store_true switch on the command line
    secret: bool = False  #: a credential (the notify URL): error messages show it masked

    @property
    def option(self) -> str:
        return f"--hokusai-{self.name}"

    @property
    def ini(self) -> str:
        return f"hokusai_{self.name.replace('-', '_')}"

    @property
    def env(self) -> str:
        return f"HOKUSAI_{self.name.replace('-', '_').upper()}"

    @property
    def dest(self) -> str:
        return f"hokusai_{self.name.replace('-', '_')}"

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


#: Every setting, in the order ``--help`` shows them. Help strings are defined once, here, and
#: reused for the command-line option and the ini key.
SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("target", "Where the live checks run: remote (the URLs below) or local (start the "
                "bundled reference stack)", _parse_target, "remote", choices=TARGETS),
    SettingSpec("api-url", "Base URL of the Hokusai API service (health, proxy mount /api/mlflow)",
                _parse_url, DEFAULT_API_URL, metavar="URL"),
    SettingSpec("auth-url", "Base URL of the Hokusai auth service (/health, /api/v1/keys/validate)",
                _parse_url, DEFAULT_AUTH_URL, metavar="URL"),
    SettingSpec("tracking-uri", "MLflow tracking URI third-party clients use (default: {api-url}/api/mlflow)",
                _parse_url, None, metavar="URL"),
    SettingSpec("direct-mlflow-url", "MLflow behind the balancer without the API service, for comparison "
                "probes (default: {api-url}/mlflow)", _parse_url, None, metavar="URL"),
    SettingSpec("service-id", "The service_id sent to the auth service when validating the key",
                _parse_service_id, "platform", metavar="ID"),
    SettingSpec("report-json", "Write the machine-readable run summary (schema pytest-hokusai/1) to PATH",
                _parse_path, None, metavar="PATH"),
    SettingSpec("report-md", "Write a Markdown summary (TEST_RESULTS.md style) to PATH",
                _parse_path, None, metavar="PATH"),
    SettingSpec("keep", "Keep the experiments and models the run created (default: delete them)",
                _parse_bool, "false", flag=True),
    SettingSpec("timeout", "Timeout in seconds for each HTTP request", _parse_timeout, "10", metavar="SECONDS"),
    SettingSpec("api-key-file", "Read the API key from this file instead of HOKUSAI_API_KEY",
                _parse_path, None, metavar="PATH"),
    SettingSpec("connect-timeout", "Seconds the first request to each host may wait to connect and for the "
                "first byte of an answer; a host that accepts the connection but sends nothing is reported "
                "HOST_UNREACHABLE after this (later requests use --hokusai-timeout)", _parse_timeout, "3",
                metavar="SECONDS"),
    SettingSpec("stack-state-file", "With --hokusai-target=local: the state file of a running "
                "'hokusai-stack up' to attach to instead of starting a stack (default: "
                "~/.cache/pytest-hokusai/stack.json, used when it exists)", _parse_path, None, metavar="PATH"),
    # -- edge and performance checks --------------------------------------------------------------
    SettingSpec("budget-auth-ms", "Latency budget in milliseconds for the auth service's key validation "
                "(p95 of the performance sample)", _parse_budget_ms, "1000", metavar="MS"),
    SettingSpec("budget-proxy-ms", "Latency budget in milliseconds for a request through the MLflow proxy "
                "(p95 of the performance sample)", _parse_budget_ms, "2000", metavar="MS"),
    SettingSpec("budget-registration-s", "Time budget in seconds for the full train, log, register, load "
                "back flow", _parse_budget_s, "120", metavar="SECONDS"),
    SettingSpec("concurrency", "How many MLflow clients the concurrency edge check runs at once",
                _parse_concurrency, "8", metavar="N"),
    SettingSpec("large-model-mb", "Size in megabytes of the artifact the large-model edge check uploads "
                "and downloads through the proxy", _parse_megabytes, "50", metavar="MB"),
    SettingSpec("revocation-wait-s", "How long in seconds to keep polling a revoked key that still works "
                "before reporting REVOCATION_DELAYED", _parse_wait_s, "10", metavar="SECONDS"),
    SettingSpec("baseline", "An earlier --hokusai-report-json file: the summary then says what was fixed, "
                "what still fails, what newly fails and how latency changed", _parse_path, None, metavar="PATH"),
    SettingSpec("regression-factor", "With --hokusai-baseline: a p50 latency more than this many times the "
                "baseline's fails the performance check", _parse_factor, "2.0", metavar="FACTOR"),
    SettingSpec("accept", "Diagnosis codes accepted as known issues (comma-separated): their findings stay in "
                "every report marked accepted, the checks they explain are reported as xfail with the code, "
                "and they do not fail the verdict", _parse_codes, "", metavar="CODE[,CODE]"),
    # -- hand-off (issue 13) -----------------------------------------------------------------------
    SettingSpec("report-issues", "Write one ready-to-file Markdown bug report per finding, addressed to the "
                "owning team, into this folder", _parse_path, None, metavar="DIR"),
    SettingSpec("notify-url", "At the end of the run, POST the verdict and root cause to this webhook "
                "(Slack-compatible JSON); a secret: shown masked", _parse_notify_url, None, metavar="URL",
                secret=True),
    # -- the local stack ---------------------------------------------------------------------------
    SettingSpec("stack-mlflow-python", "With --hokusai-target=local: run the stack's MLflow server with this "
                "Python, from another environment (e.g. the platform's mlflow==3.9.0 beside a newer client)",
                _parse_python, None, metavar="PYTHON"),
)
SPECS_BY_NAME = {spec.name: spec for spec in SETTINGS}


@dataclass(frozen=True)
class HokusaiSettings:
    """The effective pytest-hokusai settings of this run (immutable).

    Obtain it with the ``hokusai_settings`` fixture or :func:`pytest_hokusai.plugin.get_settings`.
    ``sources`` maps each setting name to where its value came from (``command line``,
    ``env HOKUSAI_X``, ``ini hokusai_x``, ``default`` or ``derived``).
    """

    target: str = "remote"
    api_url: str = DEFAULT_API_URL
    auth_url: str = DEFAULT_AUTH_URL
    tracking_uri: str = DEFAULT_API_URL + "/api/mlflow"
    direct_mlflow_url: str = DEFAULT_API_URL + "/mlflow"
    service_id: str = "platform"
    report_json: Path | None = None
    report_md: Path | None = None
    keep: bool = False
    timeout: float = 10.0
    api_key_file: Path | None = None
    connect_timeout: float = 3.0
    stack_state_file: Path | None = None
    budget_auth_ms: float = 1000.0
    budget_proxy_ms: float = 2000.0
    budget_registration_s: float = 120.0
    concurrency: int = 8
    large_model_mb: float = 50.0
    revocation_wait_s: float = 10.0
    baseline: Path | None = None
    regression_factor: float = 2.0
    accept: tuple[str, ...] = ()  #: diagnosis codes accepted as known issues (--hokusai-accept)
    report_issues: Path | None = None
    notify_url: SecretUrl | None = None
    stack_mlflow_python: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_local(self) -> bool:
        return self.target == "local"

    def with_urls(self, *, api_url: str, auth_url: str, tracking_uri: str, direct_mlflow_url: str) -> HokusaiSettings:
        """A copy pointed at other URLs (used when the local stack replaces the remote target)."""
        sources = dict(self.sources)
        for name in ("api_url", "auth_url", "tracking_uri", "direct_mlflow_url"):
            sources[name] = "local stack"
        return dataclasses.replace(
            self, api_url=api_url, auth_url=auth_url, tracking_uri=tracking_uri,
            direct_mlflow_url=direct_mlflow_url, sources=sources,
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, value, source) rows for headers and reports; holds no secret."""
        rows = []
        for spec in SETTINGS:
            value = getattr(self, spec.attr)
            shown = ",".join(value) if isinstance(value, tuple) else "" if value is None else str(value)
            rows.append((spec.name, shown, self.sources.get(spec.attr, "default")))
        return rows


def resolve_settings(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    ini: Mapping[str, str],
) -> HokusaiSettings:
    """Resolve every setting from its three sources (pure: no pytest, no process state).

    ``cli`` maps option dests (``hokusai_api_url``) to values or ``None`` when not given;
    ``ini`` maps ini names to raw strings (empty or missing when not set).
    Raises :class:`SettingsError` naming the setting, the source and the fix.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SETTINGS:
        raw: Any = None
        where = "default"
        cli_value = cli.get(spec.dest)
        if cli_value is not None and cli_value is not False:
            raw, where = cli_value, f"command line {spec.option}"
        elif environ.get(spec.env, "").strip() != "":
            raw, where = environ[spec.env], f"env {spec.env}"
        elif str(ini.get(spec.ini, "") or "").strip() != "":
            raw, where = ini[spec.ini], f"ini {spec.ini}"
        elif spec.default is not None:
            raw = spec.default
        if raw is None:
            values[spec.attr] = None
            sources[spec.attr] = where
            continue
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        try:
            values[spec.attr] = spec.parse(str(raw))
        except ValueError as exc:
            shown = mask_url(str(raw)) if spec.secret else str(raw)
            raise SettingsError(
                f"Invalid value {shown!r} for hokusai setting '{spec.name}' from {where}: {exc}. "
                f"Fix it there, or override it with {spec.option}."
            ) from None
        sources[spec.attr] = where
    if values["tracking_uri"] is None:
        values["tracking_uri"] = values["api_url"] + "/api/mlflow"
        sources["tracking_uri"] = "derived from api-url"
    if values["direct_mlflow_url"] is None:
        values["direct_mlflow_url"] = values["api_url"] + "/mlflow"
        sources["direct_mlflow_url"] = "derived from api-url"
    return HokusaiSettings(**values, sources=sources)


@dataclass(frozen=True)
class HokusaiKeys:
    """The API keys of this run, as :class:`~pytest_hokusai.secret.Secret` values (never raw)."""

    primary: Secret | None = None
    readonly: Secret | None = None
    revoked: Secret | None = None

    def all(self) -> list[Secret]:
        return [k for k in (self.primary, self.readonly, self.revoked) if k]


def resolve_keys(settings: HokusaiSettings, environ: Mapping[str, str] | None = None) -> HokusaiKeys:
    """Read the keys from ``--hokusai-api-key-file`` or the environment.

    The format is not checked here (a malformed key is a diagnosis, KEY_MALFORMED, reported before
    any request); an unreadable key file is a :class:`SettingsError`.
    """
    env = os.environ if environ is None else environ
    primary: Secret | None = None
    if settings.api_key_file is not None:
        path = settings.api_key_file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"Cannot read the API key file {str(path)!r} given by "
                f"{settings.sources.get('api_key_file', '--hokusai-api-key-file')}: {exc.strerror or exc}. "
                f"Fix the path, or unset it and export {KEY_ENV} instead."
            ) from None
        if not text:
            raise SettingsError(
                f"The API key file {str(path)!r} is empty. Put the key on its first line, or export {KEY_ENV}."
            )
        primary = Secret(text.splitlines()[0], source=f"file {path}")
    elif env.get(KEY_ENV, "").strip():
        primary = Secret(env[KEY_ENV], source=f"env {KEY_ENV}")

    def _extra(name: str) -> Secret | None:
        value = env.get(name, "").strip()
        return Secret(value, source=f"env {name}") if value else None

    return HokusaiKeys(primary=primary, readonly=_extra(READONLY_KEY_ENV), revoked=_extra(REVOKED_KEY_ENV))


def extra_key(name: str, environ: Mapping[str, str] | None = None) -> Secret | None:
    """An optional extra key for the edge checks from the environment variable ``name`` (e.g.
    ``HOKUSAI_EXPIRED_API_KEY``), as a :class:`Secret`; ``None`` when it is unset or blank."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    return Secret(value, source=f"env {name}") if value else None


def settings_from_config(config: pytest.Config, environ: Mapping[str, str] | None = None) -> HokusaiSettings:
    """Resolve settings from a pytest config (command line, ini) and the environment."""
    import pytest

    cli = {spec.dest: config.getoption(spec.dest, default=None) for spec in SETTINGS}
    ini: dict[str, str] = {}
    for spec in SETTINGS:
        try:
            ini[spec.ini] = str(config.getini(spec.ini) or "")
        except ValueError:
            ini[spec.ini] = ""
    try:
        return resolve_settings(cli, os.environ if environ is None else environ, ini)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
