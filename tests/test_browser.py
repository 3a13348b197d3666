"""One real browser: headless Chromium opens the page, starts a small compression, waits for the spectra."""
import importlib.util
import os

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (make install adds it)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: make browser-deps installs Debian's chromium (needs root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def test_page_compresses_and_draws_the_spectra(app, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app.local_url)
    page.wait_for_selector("#budget table", timeout=60_000)  # the budget is shown before anything runs
    page.locator("#compress").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    page.get_by_role("tab", name="Spectra").click()
    page.wait_for_selector("#spectrum .js-plotly-plot", timeout=60_000)
    assert page.locator("#spectrum .js-plotly-plot .scatterlayer .trace").count() == 2
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000
