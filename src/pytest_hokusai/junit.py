"""Per-check data in JUnit XML, where the JUnit family accepts it.

The checks attach what they measured (``hokusai_*`` names: latency samples, the discovery matrix,
the revocation delay, the large-model transfer) to their report's ``user_properties``
(:func:`pytest_hokusai.checks._support.record`), not through pytest's ``record_property`` fixture,
which warns under the default ``junit_family = xunit2``: a host project with ``filterwarnings =
error`` would get an error in every check that uses it.

pytest's junitxml writes ``user_properties`` as ``<properties>`` inside each ``<testcase>``: valid
for ``xunit1`` (and ``legacy``), not in the ``xunit2`` schema, which allows properties only on the
``<testsuite>``. So under ``xunit2`` this plugin moves the ``hokusai_*`` properties of a report to
test-suite properties named ``<name> <nodeid>`` (pytest's ``record_testsuite_property`` place) before
junitxml reads the report; other properties (the host's own) are left alone.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["PROPERTY_PREFIX", "HokusaiJunit"]

#: The names of the per-check properties pytest-hokusai records.
PROPERTY_PREFIX = "hokusai_"


def _junit_xml(config: pytest.Config) -> Any:
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest without junitxml
        return None
    return config.stash.get(xml_key, None)


class HokusaiJunit:
    """Registered on the controller; does nothing unless ``--junitxml`` writes the ``xunit2`` family."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)  # before junitxml's own pytest_runtest_logreport reads the report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = list(getattr(report, "user_properties", None) or [])
        ours = [(name, value) for name, value in props if str(name).startswith(PROPERTY_PREFIX)]
        if not ours:
            return
        xml = _junit_xml(self.config)
        if xml is None or getattr(xml, "family", "xunit2") in ("xunit1", "legacy"):
            return
        report.user_properties = [(name, value) for name, value in props if not str(name).startswith(PROPERTY_PREFIX)]
        if report.when == "teardown":  # junitxml writes a test case's properties from its teardown report
            for name, value in ours:
                xml.add_global_property(f"{name} {report.nodeid}", value)
