from __future__ import annotations

from pathlib import Path

import pytest

from pytest_hokusai.errors import SettingsError
from pytest_hokusai.settings import SETTINGS, HokusaiSettings, is_loopback_host, resolve_keys, resolve_settings


def resolve(cli=None, env=None, ini=None):
    return resolve_settings(cli or {}, env or {}, ini or {})


def test_defaults_match_design():
    s = resolve()
    assert s.target == "remote"
    assert s.api_url == "https://registry.hokus.ai"
    assert s.auth_url == "https://auth.hokus.ai"
    assert s.tracking_uri == "https://registry.hokus.ai/api/mlflow"
    assert s.direct_mlflow_url == "https://registry.hokus.ai/mlflow"
    assert s.service_id == "platform"
    assert s.timeout == 10.0 and s.keep is False
    assert s.report_json is None and s.report_md is None
    assert s.sources["api_url"] == "default"
    assert s.sources["tracking_uri"] == "derived from api-url"


def test_precedence_cli_over_env_over_ini():
    ini = {"hokusai_service_id": "from-ini", "hokusai_timeout": "3"}
    env = {"HOKUSAI_SERVICE_ID": "from-env"}
    s = resolve(env=env, ini=ini)
    assert s.service_id == "from-env" and s.sources["service_id"] == "env HOKUSAI_SERVICE_ID"
    assert s.timeout == 3.0 and s.sources["timeout"] == "ini hokusai_timeout"
    s = resolve(cli={"hokusai_service_id": "from-cli"}, env=env, ini=ini)
    assert s.service_id == "from-cli" and s.sources["service_id"] == "command line --hokusai-service-id"


def test_derived_urls_follow_api_url():
    s = resolve(env={"HOKUSAI_API_URL": "http://127.0.0.1:8080/"})
    assert s.api_url == "http://127.0.0.1:8080"
    assert s.tracking_uri == "http://127.0.0.1:8080/api/mlflow"
    assert s.direct_mlflow_url == "http://127.0.0.1:8080/mlflow"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"HOKUSAI_TARGET": "prod"}, "must be one of remote, local"),
        ({"HOKUSAI_TIMEOUT": "fast"}, "number of seconds"),
        ({"HOKUSAI_TIMEOUT": "0"}, "more than 0"),
        ({"HOKUSAI_API_URL": "registry.hokus.ai"}, "absolute http(s) URL"),
        ({"HOKUSAI_AUTH_URL": "http://auth.hokus.ai"}, "unencrypted"),
        ({"HOKUSAI_KEEP": "maybe"}, "true or false"),
        ({"HOKUSAI_SERVICE_ID": "two words"}, "non-empty word"),
    ],
)
def test_invalid_values_name_setting_source_and_fix(env, fragment):
    (name, value), = env.items()
    with pytest.raises(SettingsError) as info:
        resolve(env=env)
    message = str(info.value)
    assert fragment in message
    assert f"env {name}" in message
    assert "--hokusai-" in message


def test_invalid_cli_value_names_the_option():
    with pytest.raises(SettingsError, match="from command line --hokusai-timeout"):
        resolve(cli={"hokusai_timeout": "-1"})


def test_http_allowed_only_for_loopback():
    for host in ("127.0.0.1", "localhost", "[::1]", "127.0.0.5"):
        assert resolve(env={"HOKUSAI_API_URL": f"http://{host}:1234"}).api_url.startswith("http://")
    assert is_loopback_host("localhost") and not is_loopback_host("10.0.0.1") and not is_loopback_host(None)


def test_settings_are_frozen():
    s = resolve()
    with pytest.raises(Exception):
        s.target = "local"  # type: ignore[misc]


def test_every_setting_has_three_spellings():
    for spec in SETTINGS:
        assert spec.option == "--hokusai-" + spec.name
        assert spec.ini == "hokusai_" + spec.name.replace("-", "_")
        assert spec.env == "HOKUSAI_" + spec.name.replace("-", "_").upper()
        assert spec.help[0].isupper() and not spec.help.endswith(".")


def test_keys_from_env_and_file(tmp_path: Path):
    body = "K" * 32
    keys = resolve_keys(HokusaiSettings(), {"HOKUSAI_API_KEY": "hk_live_" + body,
                                            "HOKUSAI_READONLY_API_KEY": "hk_live_" + "R" * 32})
    assert keys.primary is not None and keys.primary.reveal() == "hk_live_" + body
    assert keys.primary.source == "env HOKUSAI_API_KEY"
    assert keys.readonly is not None and keys.revoked is None
    key_file = tmp_path / "key.txt"
    key_file.write_text("hk_live_" + "F" * 32 + "\n")
    s = resolve(env={"HOKUSAI_API_KEY_FILE": str(key_file)})
    keys = resolve_keys(s, {"HOKUSAI_API_KEY": "hk_live_" + body})
    assert keys.primary is not None and keys.primary.reveal() == "hk_live_" + "F" * 32
    assert keys.primary.source.startswith("file ")


def test_unreadable_or_empty_key_file(tmp_path: Path):
    s = resolve(env={"HOKUSAI_API_KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="Cannot read the API key file"):
        resolve_keys(s, {})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        resolve_keys(resolve(env={"HOKUSAI_API_KEY_FILE": str(empty)}), {})
