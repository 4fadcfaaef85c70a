"""The HTML report in a real browser: headless Chromium opens it from disk (file://), with no network.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; CI runs
``.ci/install-browser.sh``). Skipped, with the reason, where they cannot be found. The screenshot is
kept in ``$FWBENCH_ARTIFACTS`` (default: the test's tmp dir) as a CI artifact.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from fwbench.report import write_report
from fwbench.report.html import SECTION_IDS
from record_samples import example_records

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--window-size=1300,900")


def _find_browser() -> tuple[str, str] | None:
    browser = os.environ.get("FWBENCH_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = os.environ.get("FWBENCH_CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = _find_browser()
    if found is None:
        pytest.skip("Chromium or chromedriver not found (apt-get install chromium chromium-driver, "
                    "or run .ci/install-browser.sh)")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_page(browser, tmp_path_factory):
    records = example_records()
    path = write_report(records, tmp_path_factory.mktemp("report") / "report.html",
                        load_warnings=["skipping results/run/broken.json: not a readable record"])
    browser.get_log("browser")  # start both logs empty
    browser.get_log("performance")
    browser.get(path.as_uri())
    deadline = time.monotonic() + 30
    while browser.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, "the report did not finish loading in 30 s"
        time.sleep(0.1)
    return {"path": path, "records": records, "console": browser.get_log("browser"),
            "network": browser.get_log("performance")}


def test_no_console_errors(report_page):
    errors = [entry for entry in report_page["console"] if entry.get("level") in ("SEVERE", "ERROR")]
    assert errors == []


def test_every_image_renders(browser, report_page):
    sizes = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
    assert len(sizes) >= 12
    for complete, width, height, alt in sizes:
        assert complete and width > 0 and height > 0, alt


def test_every_section_is_present_and_visible(browser, report_page):
    for sid in SECTION_IDS:
        shown = browser.execute_script(
            "const s = document.getElementById(arguments[0]);"
            "const h = s && s.querySelector('h2');"
            "return s ? [s.tagName, h && h.textContent, s.offsetHeight] : null;",
            sid)
        assert shown is not None, f"section #{sid} is missing"
        tag, heading, height = shown
        assert tag == "SECTION" and heading and height > 0, sid


def test_embedded_data_parses_in_the_browser(browser, report_page):
    count = browser.execute_script("return document.getElementById('fwbench-record-count').textContent;")
    assert int(count) == len(report_page["records"])
    backends = browser.execute_script("return window.fwbenchData.records.map(r => r.backend);")
    assert sorted(backends) == sorted(r["backend"] for r in report_page["records"])


def test_only_local_resources_are_requested(report_page):
    urls = []
    for entry in report_page["network"]:
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls, "the performance log recorded no request at all"
    assert all(url.startswith(("file://", "data:")) for url in urls), [u[:80] for u in urls]


def test_full_page_screenshot_is_kept_as_an_artifact(browser, report_page, tmp_path):
    artifacts = Path(os.environ.get("FWBENCH_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1300, min(int(height) + 120, 16000))
    target = artifacts / "report-browser.png"
    assert browser.save_screenshot(str(target))
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_frontend_engine_view_shows_grid_and_overheads(browser, report_page):
    """The frontend x engine section: a row per frontend, a column per engine, and an overhead
    ratio with an interval for Keras on JAX and torch and Flax on JAX (`samples.frontend_records`)."""
    grid = browser.execute_script(
        "const s = document.getElementById('frontends');"
        "const t = s.querySelector('table.frontend-table');"
        "return {engines: Array.from(t.querySelectorAll('thead th')).slice(1).map(th => th.textContent.trim()),"
        " rows: Array.from(t.querySelectorAll('tbody tr')).map(tr => Array.from(tr.cells).map(c => c.textContent)),"
        " overheads: Array.from(s.querySelectorAll('table.overhead-table tbody tr'))"
        "   .map(tr => Array.from(tr.cells).map(c => c.textContent.trim())),"
        " height: s.offsetHeight};")
    assert grid["height"] > 0
    assert grid["engines"] == ["jax", "torch"]
    assert [row[0] for row in grid["rows"]] == ["raw", "keras", "flax"]
    assert "samples/s" in grid["rows"][1][1] and "accuracy" in grid["rows"][1][1]
    ratios = {(o[0], o[1]): o for o in grid["overheads"]}
    assert set(ratios) == {("keras", "jax"), ("keras", "torch"), ("flax", "jax")}
    keras_torch = ratios[("keras", "torch")]
    ratio = float(keras_torch[2].rstrip("×"))
    low, high = (float(v) for v in re.findall(r"\d+\.\d+", keras_torch[3])[:2])  # "2.9–3.1 (95%, …)"
    assert "95%" in keras_torch[3]  # the interval says its level and what it covers
    assert 2.5 < ratio < 3.5 and low <= ratio <= high  # the sample's Keras-on-torch steps are 3x slower


def test_latency_view_has_one_p50_line_and_p99_band_per_backend(browser, report_page):
    """The inference section (`report.latency`): per backend one p50 line and one p99 band, drawn
    (non-empty boxes in the inline SVG), the p99 band above the line, and the table's rows."""
    view = browser.execute_script(
        "const s = document.getElementById('inference');"
        "const box = el => { const b = el.getBBox(); return [b.x, b.y, b.width, b.height]; };"
        "const shapes = sel => Array.from(s.querySelectorAll(sel)).map(g => ["
        "  g.id, g.querySelector('path') ? box(g.querySelector('path')) : null]);"
        "return {lines: shapes('g[id^=\"p50-0-\"]'), bands: shapes('g[id^=\"p99band-0-\"]'),"
        " rows: s.querySelectorAll('table.latency-table tbody tr').length,"
        " head: Array.from(s.querySelectorAll('table.latency-table thead th')).map(th => th.textContent),"
        " height: s.offsetHeight};")
    assert view["height"] > 0
    backends = {"torch", "jax", "onnxruntime"}
    assert {i.split("-", 2)[2] for i, _ in view["lines"]} == backends
    assert {i.split("-", 2)[2] for i, _ in view["bands"]} == backends
    lines, bands = dict(view["lines"]), dict(view["bands"])
    for backend in backends:
        line, band = lines[f"p50-0-{backend}"], bands[f"p99band-0-{backend}"]
        assert line and line[2] > 0 and band and band[2] > 0 and band[3] > 0
        assert band[1] <= line[1] + 1  # SVG y grows downwards: the band reaches above the p50 line
    assert view["rows"] == 3 * 4  # three backends x four batch sizes
    assert "J/sample" in view["head"]  # torch's sample rows carry joules
