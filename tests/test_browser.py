"""A real browser: headless Chromium opens the page as a newcomer would and uses it."""
import importlib.util
import os
import time

import pytest

from svd_explorer.compress.methods import REGISTRY

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TABS = ["Run", "Spectra", "Depth error", "Ranks", "ACES search", "Refinement", "Cost", "Compare runs", "Side by side",
        "Zero-shot", "Download"]


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


def status(page) -> str:
    return page.locator("#status").inner_text()


def open_page(app, browser, width=1280, height=800):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(app.local_url)
    page.wait_for_selector("#budget table", timeout=60_000)  # the budget is shown before anything runs
    return page


def choose_method(page, name):
    page.get_by_label("Method").click()
    page.get_by_role("option", name=REGISTRY[name].title).click()


def test_every_tab_is_visible_at_1280_and_the_budget_does_not_wrap(app, browser):
    page = open_page(app, browser)
    for name in TABS:
        assert page.get_by_role("tab", name=name, exact=True).is_visible(), name
    cells = page.locator("#budget td")
    assert all("\n" not in cells.nth(i).inner_text() for i in range(cells.count()))   # the table does not wrap


def test_default_options_run_aces_and_the_page_follows_the_job(app, browser, tmp_path):
    page = open_page(app, browser)
    for accordion in ("Calibration and evaluation", "Method options", "Allocation options and refinement",
                      "What the budget means"):
        page.get_by_text(accordion, exact=True).click()
    choose_method(page, "saes-svd")
    page.locator("#compress").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    run = list(app.store.runs.values())[-1].result
    assert run["options"] == {o.name: o.default for o in REGISTRY["saes-svd"].options}
    assert all(0.25 <= layer["extra"]["aces"]["beta"] <= 0.75 for layer in run["layers"])
    page.get_by_role("tab", name="ACES search").click()
    page.wait_for_selector("#aces .js-plotly-plot", timeout=60_000)
    legend = page.locator("#aces .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert "coefficients tried" in legend and "chosen (exact)" in legend
    page.get_by_role("tab", name="Spectra").click()
    page.wait_for_selector("#spectrum .js-plotly-plot", timeout=60_000)
    assert page.locator("#spectrum .js-plotly-plot .scatterlayer .trace").count() == 2
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_the_status_moves_during_a_slow_phase_and_stop_is_acknowledged_at_once(app, browser):
    from playwright.sync_api import expect

    page = open_page(app, browser)
    choose_method(page, "aa-svd")
    page.get_by_text("Allocation options and refinement", exact=True).click()
    steps = page.get_by_label("number input for steps per block")
    steps.click()     # typed as a visitor types: fill() just after the accordion opened was lost in 5 of 50
    steps.press("Control+a")      # tries, and the 100-step job had then ended before Stop was pressed
    steps.press_sequentially("50000")
    steps.press("Enter")
    expect(page.get_by_label("range slider for steps per block")).to_have_value("50000")
    page.locator("#compress").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Running')", timeout=60_000)
    seen, until = set(), time.time() + 6
    while len(seen) < 3 and time.time() < until:      # never the same line for seconds while work goes on
        seen.add(status(page))
        time.sleep(0.3)
    assert len(seen) >= 3 and "Running" in status(page), seen
    start = time.time()
    page.locator("#stop").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Stopping')", timeout=2_000)
    assert time.time() - start < 2
    page.wait_for_function("document.querySelector('#status').innerText.includes('Stopped')", timeout=60_000)


def test_the_page_opens_on_the_gallery_with_pictures_in_every_tab_within_seconds(app, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    clock = time.perf_counter()
    page.goto(app.local_url)
    expect(page.locator("#status")).to_contain_text("precomputed", timeout=5_000)
    for tab, figure in (("Spectra", "spectrum"), ("Depth error", "depth"), ("Ranks", "ranks"), ("Cost", "cost"),
                        ("Compare runs", "compare")):
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_selector(f"#{figure} .js-plotly-plot .trace", timeout=5_000)
    assert time.perf_counter() - clock < 5 + 1             # five tabs clicked through, each drawn at once
    page.get_by_role("tab", name="Side by side", exact=True).click()
    page.locator("#generate").click()
    expect(page.get_by_label("compressed", exact=True)).to_have_value("svd-llm 0.2 says Hi", timeout=10_000)
    expect(page.get_by_text("Stored answers of a precomputed run")).to_be_visible()
    page.locator("#start-0").click()
    expect(page.get_by_text("SVD-LLM cuts W whitened")).to_be_visible(timeout=10_000)


def test_no_method_title_is_cut_at_1280(app, browser):
    page = open_page(app, browser)
    for name in REGISTRY:
        choose_method(page, name)
        cut = page.get_by_label("Method").evaluate("e => e.scrollWidth > e.clientWidth + 1")
        assert not cut, REGISTRY[name].title
