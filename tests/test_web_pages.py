"""What readers see in a browser: /docs without internet, the front page on a phone.

The screen test drives the machine's headless Chromium (`chromium`) and reads the PNG it
writes; without Chromium it skips, except under CI=true where it fails.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from lxml import html as lxml_html
from PIL import Image

from service import ingest

from .browser import chromium_executable
from .helpers import sqlite_only

PHONE_WIDTH = 375


@pytest.fixture
def app_settings(settings, demo):
    """The app serves the demo articles."""
    return settings


@sqlite_only
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_api_docs_load_every_asset_from_this_server(client, page):
    response = await client.get(page)
    assert response.status_code == 200
    document = lxml_html.fromstring(response.text)
    assets = [e.get("src") for e in document.iter("script") if e.get("src")]
    assets += [e.get("href") for e in document.iter("link") if e.get("href")]
    assert any(a.endswith(".js") for a in assets), assets
    server = urlsplit(str(client.base_url)).netloc
    for asset in assets:
        url = urljoin(f"{client.base_url}{page}", asset)
        assert urlsplit(url).netloc == server, f"{page} loads {url} from elsewhere"
        fetched = await client.get(url)
        assert fetched.status_code == 200, url
        assert len(fetched.content) > 1000, url
    assert "https://" not in response.text.replace(str(client.base_url), "")


@sqlite_only
async def test_image_caption_without_an_image_is_not_shown_on_the_front_page(client, sessions):
    photo = {
        "title": "Bild mit Unterschrift",
        "teaser": "Ein Artikel mit Foto.",
        "place": "Borna",
        "published": "2024-12-01",
        "image_caption": "Der Marktplatz von Borna im Schnee",
        "image_url": "https://bilder.example.org/borna.jpg",
    }
    await ingest.save(sessions, ingest.parse(json.dumps([photo]), "json"))

    page = lxml_html.fromstring((await client.get("/")).text)

    # The demo's first article has a caption but no image: its caption was loose italic
    # text above the title.
    assert "Ein ausrangierter Krankenwagen" not in page.text_content()
    (image,) = page.iter("img")
    assert image.get("src") == photo["image_url"]
    assert image.get("alt") == photo["image_caption"]


@sqlite_only
async def test_front_page_fits_a_375px_phone_screen(client, tmp_path: Path):
    """The page heading ran past the right edge of a phone screen."""
    shot = tmp_path / "front.png"
    # Asynchronously: the server under test runs in this event loop.
    browser = await asyncio.create_subprocess_exec(
        *[
            chromium_executable(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={PHONE_WIDTH},800",
            f"--screenshot={shot}",
            f"{client.base_url}/",
        ],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(browser.communicate(), 120)
    assert shot.exists(), stderr.decode(errors="replace")
    with Image.open(shot) as image:
        pixels = image.convert("L")
        width, height = pixels.size
        assert width == PHONE_WIDTH
        # The body has 1rem (16 px) padding: right of the content box nothing is drawn.
        margin = [pixels.getpixel((x, y)) for x in range(width - 12, width) for y in range(height)]
        text = [pixels.getpixel((x, y)) for x in range(16, width - 16) for y in range(height)]
    assert min(text) < 100, "no text was drawn at all (no fonts?)"
    assert min(margin) > 200, "something is drawn in the right margin: the page overflows"
