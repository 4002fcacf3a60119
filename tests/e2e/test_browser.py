"""The HTML report as a person sees it: headless Chromium opens the report of a healthy run and of a
``wrong-service-id`` run and checks what the first screen shows.

* the verdict badge is visible without scrolling (1280x800 viewport), PASS or FAIL;
* the root cause (``#hokusai-primary``) is visible, with ``data-code`` SERVICE_ID_REJECTED when faulted;
* the embedded latency chart has loaded (``naturalWidth > 0``);
* pytest-html's outcome filter works: unchecking "passed" removes the passed rows;
* a screenshot of the first screen is saved in tmp_path, and copied to ``$HOKUSAI_ARTIFACTS_DIR``
  when that is set (``HOKUSAI_ARTIFACTS_DIR=test-artifacts`` or ``=1``: ``<rootdir>/test-artifacts/``).

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package (its driver;
the browser is the system one, so ``playwright install`` is never needed). Without them the tests
skip, naming what to install. The reports are the same runs the leak test scans (made once per
session, see ``_leakstack.cached_scenario``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import _leakstack as ls

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS_ENV = "HOKUSAI_ARTIFACTS_DIR"
DEFAULT_ARTIFACTS_DIR = "test-artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BROWSER_TIMEOUT_MS = 30_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(ls.SUBPROCESS_TIMEOUT_S * 2)]


def _skip_without_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium) "
                    "and the playwright package (pip install playwright)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install playwright "
                    "(the browser is Debian's chromium at /usr/bin/chromium; no 'playwright install')")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (playwright ``Browser``) for the module, closed at its end."""
    _skip_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                      timeout=BROWSER_TIMEOUT_MS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path | None:
    """Where screenshots are copied: ``$HOKUSAI_ARTIFACTS_DIR`` (relative to the rootdir unless
    absolute; ``1``/``true``/``yes`` mean ``<rootdir>/test-artifacts``), or None when unset.

    Read at setup, before the run clears every ``HOKUSAI_*`` variable for its subprocess.
    """
    target = os.environ.get(ARTIFACTS_ENV, "").strip()
    if not target or target.lower() in ("0", "false", "no"):
        return None
    if target.lower() in ("1", "true", "yes"):
        target = DEFAULT_ARTIFACTS_DIR
    directory = Path(target)
    return directory if directory.is_absolute() else Path(request.config.rootpath) / directory


def _save_artifact(png: Path, directory: Path | None) -> None:
    """Copy ``png`` into ``directory`` (created if needed), if there is one."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(png, directory / png.name)


def _rows(page: Any) -> list[str]:
    """The result column of every row pytest-html currently renders."""
    texts: list[str] = page.locator("#results-table tbody.results-table-row .col-result").all_inner_texts()
    return [t.strip() for t in texts]


@pytest.mark.parametrize(("scenario", "verdict", "code"), [
    pytest.param("passing", "PASS", "", id="healthy"),
    pytest.param("faulted", "FAIL", "SERVICE_ID_REJECTED", id="wrong-service-id"),
])
def test_report_first_screen(browser: Any, request: pytest.FixtureRequest, tmp_path: Path,
                             artifacts_dir: Path | None, scenario: str, verdict: str, code: str) -> None:
    run = ls.cached_scenario(request, scenario)
    assert run.html_path.is_file(), run.describe()

    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(run.html_path.as_uri(), wait_until="load")
        page.wait_for_selector("#results-table tbody.results-table-row")

        # the verdict, on the first screen
        badge = page.locator("#hokusai-verdict")
        assert badge.is_visible()
        assert badge.inner_text().strip() == verdict
        assert badge.get_attribute("class") == f"hk-{verdict.lower()}"
        box = badge.bounding_box()
        assert box is not None
        assert 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT["height"], (
            f"the verdict is not on the first screen (no scrolling): box {box}")
        assert page.evaluate("window.scrollY") == 0

        # the root cause (or "no finding"), starting on the first screen too
        primary = page.locator("#hokusai-primary")
        assert primary.is_visible()
        assert primary.get_attribute("data-code") == code
        primary_box = primary.bounding_box()
        assert primary_box is not None and primary_box["y"] + 20 <= VIEWPORT["height"], (
            f"the root cause starts below the first screen: box {primary_box}")
        if code:
            assert code in primary.inner_text()

        # the embedded latency chart decoded (a broken data: URI leaves naturalWidth 0)
        chart = page.locator("#hokusai-latency-chart")
        assert chart.get_attribute("src", timeout=BROWSER_TIMEOUT_MS).startswith("data:image/png;base64,")
        natural_width = page.eval_on_selector("#hokusai-latency-chart", "img => img.complete && img.naturalWidth")
        assert natural_width and natural_width > 0, "the latency chart did not load"

        shot = tmp_path / f"hokusai-report-{scenario}.png"
        page.screenshot(path=str(shot))  # the viewport: what a person sees without scrolling
        assert shot.read_bytes()[:8] == PNG_MAGIC
        _save_artifact(shot, artifacts_dir)

        # pytest-html 4's outcome filter: unchecking "passed" removes the passed rows, keeps the rest
        before = _rows(page)
        assert "Passed" in before and any(r != "Passed" for r in before), before
        passed_box = page.locator('input.filter[data-test-result="passed"]')
        assert passed_box.is_checked() and passed_box.is_enabled()
        passed_box.uncheck()
        page.wait_for_function(
            "() => ![...document.querySelectorAll('#results-table tbody.results-table-row .col-result')]"
            ".some(td => td.textContent.trim() === 'Passed')")
        after = _rows(page)
        assert "Passed" not in after
        assert sorted(after) == sorted(r for r in before if r != "Passed")
        if verdict == "FAIL":
            assert "Failed" in after
        assert not errors, f"JavaScript errors on the report page: {errors}"
    finally:
        context.close()
