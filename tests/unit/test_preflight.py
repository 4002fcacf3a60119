"""Environment preflight: an unsupported MLflow client is a usage error naming the version and range."""

from __future__ import annotations

from importlib import metadata

import pytest

from pytest_hokusai.client_version import SUPPORTED_RANGE, mlflow_client_version
from pytest_hokusai.preflight import mlflow_version_problem as _mlflow_version_problem


def _installed(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    """Pretend these distributions (name -> version) are the MLflow ones installed."""
    real = metadata.version

    def version(name: str) -> str:
        if name in ("mlflow", "mlflow-skinny"):
            if name in versions:
                return versions[name]
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)


@pytest.mark.parametrize(("version", "ok"), [
    ("3.9.0", True), ("3.11.1", True), ("3.12.0", True), ("3.17.2", True), ("3.18.0rc0", True),
    ("4.0.0", True), ("10.2.0", True),  # no upper bound
    ("3.8.1", False), ("2.9.2", False), ("2.22.5", False),
])
def test_mlflow_version_range(monkeypatch, version, ok):
    _installed(monkeypatch, {"mlflow": version, "mlflow-skinny": version})
    problem = _mlflow_version_problem()
    if ok:
        assert problem is None
    else:
        assert problem is not None
        assert version in problem and SUPPORTED_RANGE in problem and "pip install" in problem


def test_skinny_client_alone_is_read(monkeypatch):
    """The core install has mlflow-skinny only: its version is the client's."""
    _installed(monkeypatch, {"mlflow-skinny": "3.10.0"})
    assert mlflow_client_version() == "3.10.0"
    assert _mlflow_version_problem() is None
    _installed(monkeypatch, {"mlflow-skinny": "3.1.0"})
    problem = _mlflow_version_problem()
    assert problem is not None and "3.1.0" in problem


def test_no_client_at_all(monkeypatch):
    _installed(monkeypatch, {})
    problem = _mlflow_version_problem()
    assert problem is not None and "no MLflow client" in problem and "pip install pytest-hokusai" in problem


def test_unsupported_mlflow_stops_a_live_run(pytester, monkeypatch):
    pytester.makeconftest(
        "from importlib import metadata\n"
        "_real = metadata.version\n"
        "metadata.version = lambda name: '3.8.1' if name in ('mlflow', 'mlflow-skinny') else _real(name)\n"
    )
    pytester.makepyfile("import pytest\n@pytest.mark.live\ndef test_x():\n    pass\n")
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_live_" + "M" * 32)
    # in a subprocess: the conftest patches importlib.metadata for the whole process
    result = pytester.runpytest_subprocess("-m", "live", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*MLflow client 3.8.1 is not supported*3.9 or newer*"])
