"""What the browser tests share: finding Chromium, a page that records what went wrong,
signing in to the console, and the check every page passes (fits the screen, no serious
accessibility violation, a screenshot to look at).

Playwright drives Debian's `chromium` through `executable_path` (never a downloaded
browser); without Chromium the browser tests skip, except under CI=true where they fail.
The fixtures (`browser`, `width`, `page`) live in conftest.py.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import ConsoleMessage, Page, Request, Response

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
# A phone and a laptop.
WIDTHS = (375, 1280)
HEIGHT = 800
BLOCKING_IMPACTS = ("serious", "critical")

_axe = Axe()


def chromium_executable() -> str:
    """The machine's Chromium; skip without one, except under CI=true where that fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is not installed (apt-get install chromium)")
    pytest.skip("Chromium is not installed")


@dataclass
class Watch:
    """What went wrong in a page while a test used it: console errors, uncaught
    exceptions, failed requests and answers of 400 or more. A navigation that a test
    expects to answer with an error status says so with `expect_status`."""

    problems: list[str] = field(default_factory=list)
    _expected: dict[str, int] = field(default_factory=dict)

    def expect_status(self, url: str, status: int) -> None:
        self._expected[url] = status

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium logs every error answer; an expected one is no problem.
        where = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and where in self._expected:
            return
        self.problems.append(f"console error: {message.text} ({where})")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and self._expected.get(response.url) != response.status:
            self.problems.append(f"{response.status} for {response.url}")


@dataclass
class Operator:
    email: str
    password: str


async def sign_in(page: Page, base_url: str, operator: Operator) -> None:
    """Sign in through the console's form, as a person would."""
    await page.goto(f"{base_url}/verwaltung/anmelden")
    await page.get_by_label("E-Mail-Adresse").fill(operator.email)
    await page.get_by_label("Passwort").fill(operator.password)
    await page.get_by_role("button", name="Anmelden").click()
    await page.wait_for_url(f"{base_url}/verwaltung/")


def screenshot_path(name: str, width: int) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "start"
    return SCREENSHOTS / f"{slug}-{width}.png"


async def check_page(page: Page, name: str, contrast: bool = True) -> Path:
    """The page as it stands fits its width, has no serious or critical axe violation,
    and is saved as a full-page screenshot (whose path is printed and returned).
    `contrast=False` leaves out axe's colour-contrast rule, which takes most of its time."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    shot = screenshot_path(name, width)
    shot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    inner_width = await page.evaluate("window.innerWidth")
    assert scroll_width <= inner_width, f"{name} is {scroll_width} px wide at {inner_width} px"
    options: dict[str, object] = {"resultTypes": ["violations"]}
    if not contrast:
        options["rules"] = {"color-contrast": {"enabled": False}}
    results = await _axe.run(page, options=options)
    blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING_IMPACTS]
    assert not blocking, f"axe on {name} at {width} px:\n" + "\n".join(_described(blocking))
    return shot


def _described(violations: list[dict[str, object]]) -> Iterator[str]:
    for violation in violations:
        yield f"- {violation['impact']} {violation['id']}: {violation['help']}"
        nodes = violation["nodes"]
        assert isinstance(nodes, list)
        for node in nodes[:5]:
            yield f"    {node['target']}: {node['html'][:160]}"
