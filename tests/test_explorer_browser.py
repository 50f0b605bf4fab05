"""explorer.html in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, installed by
.ci/run) driven by selenium. The test picks a sample through the page's own controls and checks the tokens and
their CE values in the page against the run's samples.jsonl; it saves a screenshot (path printed)."""

import json
import shutil

import pytest

from fixtures.synthetic import write_synthetic_profile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="headless Chromium not installed (apt-get install -y chromium chromium-driver)")


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1400,1100"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_explorer_page_shows_the_logged_tokens_and_ce(tmp_path, browser):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from study import explore

    profile = write_synthetic_profile(tmp_path / "w", seeds=(0, 1), steps=6)
    page = explore.write_page(profile, tmp_path / "w" / "runs", tmp_path / "explorer.html")
    html = page.read_text()
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # nothing fetched

    browser.get(page.as_uri())
    WebDriverWait(browser, 20).until(lambda d: Select(d.find_element("id", "group")).options)
    picks = [("group", "filter_ablation"), ("arm", "no_filter"), ("seed", "1"), ("kept", "all"),
             ("change", "worse"), ("step", "4"), ("sample", "0")]
    for control, value in picks:  # each choice through the page's own <select>, as a reader would
        Select(browser.find_element("id", control)).select_by_visible_text(value)
    spans = browser.find_elements("css selector", "#refined span.tok")
    tokens = [s.get_attribute("textContent") for s in spans]
    ces = [float(s.get_attribute("data-ce")) for s in spans]
    shot = tmp_path / "explorer.png"
    browser.save_screenshot(str(shot))
    print(f"explorer screenshot: {shot}")

    run = tmp_path / "w" / "runs" / "syn-dapo_dynamic_nofilter-s1" / "samples.jsonl"
    logged = [r for r in map(json.loads, run.read_text().splitlines())
              if r["step"] == 4 and r["refined"] is not None and r["refined_reward"] < r["reward"]]
    assert logged, "the synthetic run logs a worse refinement at step 4"
    assert tokens == logged[0]["refined_tokens"]
    assert ces == logged[0]["refined_token_ce"]  # exactly the logged numbers
    head = browser.find_element("id", "head").text
    assert "no_filter" in head and "seed 1" in head and "step 4" in head and logged[0]["task_id"] in head
    nums = browser.find_element("id", "nums").text
    assert "not kept (worse)" in nums and "r(y′) = -0.6" in nums
    title = spans[0].get_attribute("title")
    assert title == f"token 0: CE {logged[0]['refined_token_ce'][0]:.4f} nats"  # the value on hover
    assert shot.stat().st_size > 10_000
