"""Open an HTML file in headless Chromium and print, as JSON, what a reader would get: the console messages,
whether every picture decoded, the rows of the metrics table; and save a screenshot.

    python tests/visualize/browser_check.py REPORT.html SCREENSHOT.png

Uses Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``); the
driver's path is given explicitly, so Selenium Manager never runs and nothing is downloaded. The browser
gets a fresh profile, no background networking, and a host resolver that resolves nothing: a page that
tried to fetch anything would log an error. Run by tests/visualize/test_report_browser.py under a hard
timeout that kills the whole process tree.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1280,1600",
]


def check(page: Path, screenshot: Path) -> dict:
    profile = tempfile.mkdtemp(prefix="attnseg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        table = driver.find_elements(By.ID, "metrics-per-class")
        result = {
            "session": os.getsid(0),  # the browser and its driver run in this session too
            "title": driver.title,
            "console": driver.get_log("browser"),
            "metrics_table": bool(table) and table[0].is_displayed(),
            "metrics_rows": [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#metrics-per-class tbody tr")],
            "images": driver.execute_script(
                "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
            ),
        }
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return result


if __name__ == "__main__":
    print(json.dumps(check(Path(sys.argv[1]), Path(sys.argv[2]))))
