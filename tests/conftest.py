"""Shared test set-up: deterministic seeds and small CPU workloads."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attnseg.data.geometry import Geometry
from tests.fixtures import nnunet_builder, oblique_geometry

# Tests use small tensors, where one thread is as fast as two and immune to oversubscription when
# other processes share the cores (two OpenMP threads on a busy 2-core machine can be 50x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def oblique() -> Geometry:
    """An oblique, anisotropic grid with an origin that is not float32-representable."""
    return oblique_geometry()


@pytest.fixture
def make_nnunet(tmp_path: Path) -> Callable[..., Path]:
    """Build a tiny nnU-Net v2 raw dataset in tmp_path; returns its folder."""
    return nnunet_builder(tmp_path)


# ---- guards: timeouts of slow tests, and a skipped browser test said out loud ------------------------

SLOW_TIMEOUT_S = 1800  # `make test-slow`: e.g. 20 torchrun trainings of up to 60 s each in one test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests get SLOW_TIMEOUT_S instead of pyproject's default per-test timeout, unless they set one."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


BROWSER_TEST = "test_report_browser.py"


def browser_skip_note(skipped: list) -> list[str]:
    """Lines for the terminal summary when the report's browser test was skipped (Chromium missing)."""
    reasons = []
    for report in skipped:
        if report.nodeid.split("::")[0].endswith(BROWSER_TEST):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
            reasons.append(f"{report.nodeid}: {reason}")
    if not reasons:
        return []
    return [
        *reasons,
        "The HTML report was not checked in a real browser. To run that test, install Debian's headless",
        "Chromium and its driver: apt-get install -y chromium chromium-driver (selenium is in the dev extra);",
        "or run .ci/run, which installs them and sets ATTNSEG_REQUIRE_BROWSER=1 so that the test cannot skip.",
    ]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = browser_skip_note(terminalreporter.stats.get("skipped", []))
    if lines:
        terminalreporter.section("browser test skipped", sep="-", yellow=True, bold=True)
        for line in lines:
            terminalreporter.line(line)
