"""Screenshots of the real app for the README: launches it on the embedded model, compresses in Chromium.

    python bench/screenshot.py [--methods svd-llm,saes-svd] [--out assets]

Runs the methods one after the other (so the comparison tab has several runs); the "running" shot is
taken while the last one compresses, the tab shots once it is done.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="svd-llm,saes-svd")
    parser.add_argument("--out", default="assets")
    parser.add_argument("--tabs", default="Spectra,Error through depth,ACES search,Compare runs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from svd_explorer.methods import REGISTRY
    from svd_explorer.ui import build_demo

    demo = build_demo()
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.goto(demo.local_url)
        page.wait_for_selector("#budget table", timeout=120_000)
        methods = args.methods.split(",")
        for i, name in enumerate(methods):
            page.get_by_label("Method").click()
            page.get_by_role("option", name=REGISTRY[name].title).click()
            page.locator("#compress").click()
            if i == len(methods) - 1:
                page.get_by_role("tab", name="Spectra").click()
                try:  # the new run's own figures, a few projections in
                    page.wait_for_function("document.querySelector('#status').innerText.includes('projection 4 ')",
                                           timeout=300_000)
                    page.wait_for_timeout(2000)
                finally:
                    page.screenshot(path=str(out / "app-running.png"))
            page.wait_for_timeout(3000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('Done')", timeout=900_000)
        for tab in filter(None, args.tabs.split(",")):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / f"app-{tab.lower().replace(' ', '-')}.png"))
        browser.close()
    demo.close()


if __name__ == "__main__":
    main()
