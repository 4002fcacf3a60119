"""Environment preflight: an unsupported MLflow client is a usage error naming the version."""

from __future__ import annotations

from importlib import metadata

import pytest

from pytest_hokusai.preflight import mlflow_version_problem


@pytest.mark.parametrize(("version", "ok"), [("3.9.0", True), ("3.11.1", True), ("2.9.2", True),
                                             ("2.8.1", False), ("4.0.0", False)])
def test_mlflow_version_range(monkeypatch, version, ok):
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: version if name == "mlflow" else real(name))
    problem = mlflow_version_problem()
    if ok:
        assert problem is None
    else:
        assert problem is not None and version in problem and "pip install" in problem


def test_unsupported_mlflow_stops_a_live_run(pytester, monkeypatch):
    pytester.makeconftest(
        "from importlib import metadata\n"
        "_real = metadata.version\n"
        "metadata.version = lambda name: '2.1.0' if name == 'mlflow' else _real(name)\n"
    )
    pytester.makepyfile("import pytest\n@pytest.mark.live\ndef test_x():\n    pass\n")
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_live_" + "M" * 32)
    result = pytester.runpytest("-m", "live", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*MLflow client 2.1.0 is not supported*"])
