"""The web page in a real browser (Playwright driving Debian's Chromium): type a prompt, click
Generate, see the place in sd3desk's queue, then the image."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs it)")
# the flags the browser needs in a sandbox without a network (see the tool library's notes)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_page_shows_the_queue_place_then_the_image(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with served.client() as http:
        ahead = http.post(
            "/api/v1/jobs", json={"prompt": "ahead", "steps": 150, "width": 512, "height": 512}
        ).json()
        wait_until(lambda: http.get(f"/api/v1/jobs/{ahead['id']}").json()["state"] == "running")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            elsewhere: list[str] = []  # the page works offline: fonts, scripts, all from here
            page.on(
                "request",
                lambda r: None if r.url.startswith(served.url) else elsewhere.append(r.url),
            )
            page.goto(served.url)
            page.locator("#prompt textarea, #prompt input").first.fill("a lighthouse in fog")
            page.locator("button#generate").click()
            status = page.locator("#queue-status")
            expect(status).to_contain_text("waiting in sd3desk's queue: next", timeout=60_000)
            page.screenshot(path=str(tmp_path / "waiting.png"))
            http.post(f"/api/v1/jobs/{ahead['id']}/cancel")  # let this one run
            expect(status).to_contain_text("done", timeout=180_000)
            image = page.locator("#result img")
            expect(image).to_have_attribute("src", re.compile(r".+\.png"), timeout=30_000)
            page.screenshot(path=str(tmp_path / "done.png"))
            browser.close()
        assert not elsewhere, f"the page asked another host: {elsewhere}"
        jobs = http.get("/api/v1/jobs", params={"state": "done"}).json()
        mine = next(j for j in jobs if j["params"]["prompt"] == "a lighthouse in fog")
        assert mine["source"] == "web" and mine["state"] == "finished"
    shots = os.environ.get("SD3DESK_SHOTS")  # to look at them: SD3DESK_SHOTS=DIR make test
    if shots:
        for name in ("waiting.png", "done.png"):
            shutil.copy(tmp_path / name, Path(shots) / f"web-{name}")
