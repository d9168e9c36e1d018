"""Debian's headless Chromium for the console's tests, through Playwright (never its own browser downloads).

``browser`` (one per module) and ``page`` (a fresh context per test, failing the test on any
error of the page's scripts) are fixtures: a test module imports them. ``shot`` writes a
screenshot to ``test-artifacts/screenshots/``, which CI keeps.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

__all__ = ["SCREENSHOTS", "browser", "page", "shot"]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (``scripts/setup-browser`` installs it when it is missing), headless."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-browser")], check=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _script_error(kind: str, text: str) -> bool:
    """A console error of the page's own scripts (the browser also logs every refused request it sees)."""
    return kind == "error" and not text.startswith("Failed to load resource")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no token, no remembered project); fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console", lambda message: errors.append(message.text) if _script_error(message.type, message.text) else None
    )
    yield opened
    context.close()
    assert not errors, f"the console's scripts failed: {errors}"


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
