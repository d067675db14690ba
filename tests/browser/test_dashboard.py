"""`/dashboard` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) against `switchyard demo` as a user starts it.

It signs in through the link the demo prints, then asserts from the DOM that every backend
of the demo fleet is listed with numbers, that those numbers change while the built-in
traffic runs, that the traffic charts are drawn, and that a decision opens to its whole
record. It saves a screenshot to bench/results/dashboard.png (the one the README shows).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in tests/sdk/requirements.txt")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def wait(driver, seconds):
    """A wait that polls again when the page replaced an element while it was being read (a
    navigation after a form post, or the dashboard redrawing a live table)."""
    return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,))


ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target" / "debug" / "switchyard"))
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT", ROOT / "bench" / "results" / "dashboard.png"))
# Seconds of traffic before the screenshot (longer runs fill more of the 15-minute charts).
SETTLE = float(os.environ.get("DASHBOARD_SETTLE_S", "6"))
BACKENDS = {"llama-3-8b/h100-a", "llama-3-8b/h100-b", "llama-3-8b/l4-a"}


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if not browser or not Path(driver).exists():
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver (scripts/test does)")
    return browser, driver


@pytest.fixture(scope="module")
def demo():
    proc = subprocess.Popen(
        [str(BINARY), "demo", "--port", "0", "--rate", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = {}

    def read():
        for line in proc.stdout:
            m = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/dashboard\?token=[0-9a-f]+)", line)
            if m and "url" not in found:
                found["url"] = m.group(1)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + 20
    while "url" not in found and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if "url" not in found:
        proc.kill()
        pytest.fail("demo printed no dashboard link: " + proc.stderr.read())
    yield found["url"]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1440,1250", "--hide-scrollbars"):
        opts.add_argument(a)
    service = webdriver.ChromeService(executable_path=driver_path)
    d = webdriver.Chrome(options=opts, service=service)
    yield d
    d.quit()


def fleet(d):
    """backend -> {field: text} for every row of the fleet table, read in one go (the page
    refreshes it every second)."""
    return d.execute_script(
        """
        const out = {};
        for (const tr of document.querySelectorAll('#fleet-rows tr[data-backend]')) {
          const cells = {};
          for (const td of tr.querySelectorAll('td[data-field]')) cells[td.dataset.field] = td.textContent;
          cells.state = tr.querySelector('.badge').textContent;
          out[tr.dataset.backend] = cells;
        }
        return out;
        """
    )


def test_dashboard_shows_the_live_fleet_and_opens_a_decision(demo, browser):
    d = browser
    d.get(demo)
    # The token link signs in (cookie) and lands on the page without the token in the address.
    wait(d, 15).until(lambda d: d.current_url.endswith("/dashboard"))
    assert "token=" not in d.current_url
    wait(d, 15).until(lambda d: set(fleet(d)) == BACKENDS)
    assert d.find_element(By.ID, "conn").get_attribute("data-state") == "live"
    # Engine and GPU figures come from scrapes, which may land a tick after the page opens.
    wait(d, 15).until(lambda d: all(c["gpu"] != "–" and c["engine"] != "–" for c in fleet(d).values()))

    first = fleet(d)
    for name, cells in first.items():
        assert cells["state"] == "up", (name, cells)
        assert re.fullmatch(r"\d+", cells["in_flight"]), (name, cells)
        assert re.fullmatch(r"\d+ / \d+", cells["engine"]), (name, cells)  # scraped from the engine
        assert re.fullmatch(r"\d+(\.\d+)?", cells["rps"]), (name, cells)
        assert cells["gpu"].endswith("%"), (name, cells)
        assert cells["temp"].endswith("°C"), (name, cells)

    # Live: the numbers move while the demo's traffic runs.
    changed = set()
    deadline = time.time() + 20
    while time.time() < deadline and len(changed) < 2:
        time.sleep(1)
        now = fleet(d)
        changed |= {b for b in BACKENDS if now.get(b) != first.get(b)}
    assert len(changed) >= 2, f"fleet numbers did not change: {first} -> {fleet(d)}"
    uptime = d.find_element(By.ID, "uptime").text
    wait(d, 5).until(lambda d: d.find_element(By.ID, "uptime").text != uptime)

    # The traffic charts are drawn with a series per backend.
    for chart in ("chart-rps", "chart-tps"):
        assert d.find_elements(By.CSS_SELECTOR, f"#{chart} canvas"), chart
        labels = {e.get_attribute("textContent") for e in d.find_elements(By.CSS_SELECTOR, f"#{chart} .u-legend .u-series .u-label")}
        assert BACKENDS <= labels, (chart, labels)

    # Decisions: rows for routed requests; clicking one shows its whole record.
    wait(d, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#decision-rows tr[data-id]"))
    time.sleep(SETTLE)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SCREENSHOT))
    row = d.find_elements(By.CSS_SELECTOR, "#decision-rows tr[data-id]")[0]
    want = row.get_attribute("data-id")
    # Dispatched on the row itself: a pointer click at the row's coordinates can land on its
    # neighbour when a tick inserts newer rows above it in between.
    d.execute_script("arguments[0].click()", row)
    wait(d, 5).until(lambda d: d.find_element(By.ID, "record").get_attribute("open") is not None)
    record = json.loads(d.find_element(By.ID, "record-body").text)
    assert record["id"] == want
    assert record["model"] == "llama-3-8b"
    assert f"llama-3-8b/{record['backend']}" in BACKENDS
    assert record["status"] == 200
    assert record["policy"] == "prefix_aware"
    assert record["attempts"] and record["attempts"][-1]["outcome"] == "ok"
    assert {s["backend"] for s in record["scores"]} == {b.split("/")[1] for b in BACKENDS}
    assert record["duration_ms"] > 0
    d.save_screenshot(str(SCREENSHOT.with_name(SCREENSHOT.stem + "-decision.png")))
    d.find_element(By.ID, "record-close").click()
    wait(d, 5).until(lambda d: d.find_element(By.ID, "record").get_attribute("open") is None)


def test_dashboard_asks_for_the_token_and_refuses_a_wrong_one(demo, browser):
    d = browser
    base = demo.split("?")[0]
    d.delete_all_cookies()
    d.get(base)
    assert d.find_elements(By.CSS_SELECTOR, "form[action='/dashboard/login']"), "no sign-in form"
    d.find_element(By.NAME, "token").send_keys("not-the-token")
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(d, 5).until(lambda d: "not the admin token" in d.find_element(By.CSS_SELECTOR, ".error").text)
    token = demo.split("token=")[1]
    d.find_element(By.NAME, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(d, 15).until(lambda d: set(fleet(d)) == BACKENDS)
