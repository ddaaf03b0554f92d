"""The suite's own guards: a per-test timeout and strict markers (pyproject.toml), and a skipped browser
test said in the terminal summary (tests/conftest.py)."""

from types import SimpleNamespace

import pytest

from tests.conftest import browser_skip_note


def test_every_test_has_a_timeout_and_markers_are_strict(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout")  # pytest-timeout, the dev extra
    assert float(pytestconfig.getini("timeout")) >= 300 and pytestconfig.getini("timeout_method") == "signal"
    assert "--strict-markers" in pytestconfig.getini("addopts")


def test_a_skipped_browser_test_is_said_in_the_summary() -> None:
    browser = SimpleNamespace(
        nodeid="tests/visualize/test_report_browser.py::test_report_opens_in_headless_chromium",
        longrepr=("test_report_browser.py", 35, "Skipped: needs /usr/bin/chromium"),
    )
    other = SimpleNamespace(nodeid="tests/test_device.py::test_gpu", longrepr=("test_device.py", 9, "Skipped: no GPU"))
    lines = browser_skip_note([other, browser])
    assert lines[0] == f"{browser.nodeid}: Skipped: needs /usr/bin/chromium"
    text = "\n".join(lines)
    assert "apt-get install -y chromium chromium-driver" in text
    assert ".ci/run" in text and "ATTNSEG_REQUIRE_BROWSER=1" in text
    assert browser_skip_note([other]) == []
