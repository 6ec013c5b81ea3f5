"""End to end in a real browser: Debian's headless chromium opens ``gfvc serve``'s page, runs
a few seconds of the live call and reads what the page shows.

Skips, saying why, where chromium or its driver is not installed (``.ci/run`` installs them
with apt where it can). ``GFVC_UPDATE_SCREENSHOT=1`` also saves the page as
``docs/serve_screenshot.png`` (the README's picture).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from gfvc.serve.app import create_app  # noqa: E402
from gfvc.serve.server import ServerThread  # noqa: E402

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve_screenshot.png"
CALL_SECONDS = 4.0


def _find(*names: str) -> str | None:
    return next((p for n in names if (p := shutil.which(n))), None)


@pytest.fixture(scope="module")
def browser():
    binary = _find("chromium", "chromium-browser", "google-chrome")
    driver = _find("chromedriver", "chromium-driver")
    if binary is None or driver is None:
        pytest.skip(
            "no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--window-size=800,1000",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _number(drv, element_id: str) -> float:
    return float(drv.find_element(By.ID, element_id).text)


def test_the_page_runs_a_live_call_and_shows_the_rate_of_the_units_sent(browser, tmp_path):
    drv = browser
    app = create_app(tmp_root=str(tmp_path))
    with ServerThread(app) as url:
        drv.get(url + "/")
        wait = WebDriverWait(drv, 120)
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("connected"))
        options = [
            o.get_attribute("value") for o in drv.find_elements(By.CSS_SELECTOR, "#source option")
        ]
        assert "sample:sample" in options
        drv.find_element(By.ID, "start").click()
        wait.until(lambda d: _number(d, "frames") > 0)  # models load, the face is tracked
        first = time.monotonic()
        while time.monotonic() - first < CALL_SECONDS:
            time.sleep(0.25)
        if os.environ.get("GFVC_UPDATE_SCREENSHOT") == "1":
            drv.save_screenshot(str(SCREENSHOT))
        drv.find_element(By.ID, "stop").click()
        wait.until(lambda d: "call ended" in d.find_element(By.ID, "status").text)

        frames = _number(drv, "frames")
        sent = _number(drv, "bytes")
        seconds = _number(drv, "seconds")
        kbps = _number(drv, "kbps")
        server_bytes = _number(drv, "server-bytes")
        assert frames >= 2 and _number(drv, "keys") >= 1
        # decoded pictures arrived and are shown
        for img in ("original", "decoded"):
            src = drv.find_element(By.ID, img).get_attribute("src")
            assert src.startswith("data:image/jpeg;base64,") and len(src) > 1000
        # the rate shown is the units' bytes over the call's time, and the page counted
        # exactly the bytes the server's encoder produced
        assert sent == server_bytes > 0
        # (kbps shown to 2 decimals, seconds to 3: both roundings stay well under 0.2 %)
        assert kbps == pytest.approx(8 * sent / 1000 / seconds, rel=2e-3)
        assert seconds > 1
        assert "receiver" not in drv.find_element(By.ID, "message").text
    # the server has stopped (so every handler has finished): the tab's folder is gone
    assert list(tmp_path.iterdir()) == []
