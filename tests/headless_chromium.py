"""Headless Chromium for the tests of report.html (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

``chromium()`` starts the browser with every background service off (no update checks, sync or
QUIC), a fresh profile, and the performance log on, so a test can list each request a page made
(:func:`requests_of`). When Chromium is missing, :func:`find_or_install` installs it with apt-get
where it can (root, apt present), else a local run skips and a CI run (``CI`` set) fails.

Also a command, for the README's screenshot: ``python tests/headless_chromium.py REPORT.html OUT.png [K]``
(K: move the page's λ slider K steps to the right first).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

BINARY, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver", "fonts-liberation")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1200,900")


def _present() -> bool:
    return os.access(BINARY, os.X_OK) and os.access(DRIVER, os.X_OK)


def find_or_install() -> str | None:
    """None when Chromium and its driver are there (installed now if need be), else why they are not."""
    if not _present() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
        for cmd in (["apt-get", "update", "-qq"], install):
            try:
                subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
            except subprocess.TimeoutExpired:
                break
    if not _present():
        return f"{BINARY} and {DRIVER} are needed (Debian: apt-get install {' '.join(PACKAGES[:2])})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is needed (pip install -e '.[dev]')"
    return None


@contextmanager
def chromium():
    """A Selenium driver of headless Chromium with a fresh profile; quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="oat-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = BINARY
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        driver.get("about:blank")
        driver.get_log("performance")  # the start page's requests are not the page's
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requests_of(driver) -> list[str]:
    """The URLs of every request (and WebSocket) since the last call, from the performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
        elif msg["method"] == "Network.webSocketCreated":
            urls.append(msg["params"]["url"])
    return urls


def full_page_screenshot(driver, out: Path) -> Path:
    """The whole page, below the window's bottom too, as a PNG."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


if __name__ == "__main__":
    steps = sys.argv[3] if len(sys.argv) == 4 else "0"
    if len(sys.argv) not in (3, 4) or not steps.isdigit():
        sys.exit("usage: python tests/headless_chromium.py REPORT.html OUT.png [K]")
    why = find_or_install()
    if why:
        sys.exit(why)
    with chromium() as d:
        d.get(Path(sys.argv[1]).resolve().as_uri())
        if int(steps):
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys

            d.find_element(By.ID, "lam-slider").send_keys(*[Keys.ARROW_RIGHT] * int(steps))
        print(full_page_screenshot(d, Path(sys.argv[2])))
