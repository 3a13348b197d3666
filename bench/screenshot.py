"""Screenshots of the real app for the README, from a walk a newcomer would take, offline.

    python bench/screenshot.py [--methods ressvd,saes-svd] [--out assets] [--width 1280]

Launches the app on the embedded model in this process, opens it in headless Chromium at 1280 px,
opens every accordion for the first shot (then closes them), shows the gallery's error through depth as
the page opens, compresses with each method in turn
(so the comparison has several runs), takes the "running" shot while the last one compresses, then
one shot per tab once it is done, including a side-by-side generation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = {"Spectra": "app-spectra", "Depth error": "app-depth-error", "Ranks": "app-ranks",
         "ACES search": "app-aces-search", "Compare runs": "app-compare-runs"}


def wait_status(page, pattern: str, timeout_s: int) -> None:
    """Wait until the status line matches a regular expression; on a timeout say what it showed instead."""
    script = f"new RegExp({pattern!r}).test(document.querySelector('#status').innerText)"
    try:
        page.wait_for_function(script, timeout=timeout_s * 1000)
    except Exception:
        raise SystemExit(f"waited {timeout_s} s for /{pattern}/; the status says: "
                         f"{page.locator('#status').inner_text()!r}") from None


def compress(page, title: str, ratio: float, last: bool, out: Path) -> None:
    page.get_by_label("Method").click()
    page.get_by_role("option", name=title).click()
    ratio_box = page.locator("#ratio input")
    ratio_box.fill(str(ratio))
    ratio_box.press("Tab")
    page.locator("#compress").click()
    if last:
        page.get_by_role("tab", name="Spectra").click()
        wait_status(page, r"projection ([3-9]|\d\d+) of", 1800)   # a few layers drawn, the run going on
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out / "app-running.png"), full_page=True)
    wait_status(page, "Done", 3600)
    page.wait_for_timeout(3000)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="ressvd,saes-svd")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--out", default="assets")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from svd_explorer.compress.methods import REGISTRY
    from svd_explorer.ui.layout import build_demo

    demo = build_demo()
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(demo.local_url)
        page.wait_for_selector("#budget table", timeout=300_000)
        for accordion in ("Calibration and evaluation", "Method options", "Allocation options and refinement"):
            page.get_by_text(accordion, exact=True).click()
        page.screenshot(path=str(out / "app-start.png"))
        for accordion in ("Calibration and evaluation", "Method options", "Allocation options and refinement"):
            page.get_by_text(accordion, exact=True).click()   # closed again: status, tabs and figure fit a shot
        page.get_by_role("tab", name="Depth error").click()   # what a visitor sees at once: the gallery
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "app-gallery.png"), full_page=True)
        methods = args.methods.split(",")
        for i, name in enumerate(methods):
            compress(page, REGISTRY[name].title, args.ratio, i == len(methods) - 1, out)
        for tab, file in SHOTS.items():
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / f"{file}.png"), full_page=True)
        page.get_by_role("tab", name="Side by side").click()
        page.locator("#generate").click()
        page.wait_for_timeout(60_000)
        page.screenshot(path=str(out / "app-side-by-side.png"), full_page=True)
        browser.close()
    demo.close()


if __name__ == "__main__":
    main()
