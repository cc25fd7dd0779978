"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
search by tile id, position and uploaded image, click a neighbour, open its provenance."""

from __future__ import annotations

import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on this machine (as root: apt-get install -y chromium; `make test` does it)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(service):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        # the page must work offline: any request off the service is an error
        outside = []
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(service.url)
                else (outside.append(route.request.url), route.abort())
            ),
        )
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(service.url + "/")
        page.wait_for_selector(".neighbour")
        yield page
        assert not errors, errors
        assert not outside, outside
        browser.close()


def _ids(page) -> list[str]:
    return page.eval_on_selector_all(".neighbour", "els => els.map(e => e.dataset.tileId)")


def _wait_for_query(page, text: str) -> None:
    page.wait_for_function(
        "t => document.getElementById('query').textContent.includes(t) && "
        "document.querySelectorAll('.neighbour').length > 0",
        arg=text,
    )


def test_search_by_tile_shows_neighbours_with_cutouts(page, cat, tile_ids):
    tid = tile_ids[3]
    page.fill("#k", "5")
    page.fill("#tile-id", tid)
    page.click("#search-tile")
    _wait_for_query(page, tid)
    expected = list(cat.similar(tid, k=5)["tile_id"])
    assert _ids(page) == expected
    first = page.locator(".neighbour").first
    assert first.locator(".sim").text_content().startswith("similarity 1.0")
    assert "RA " in first.locator(".pos").text_content()
    # every cutout really loaded (224x224 PNGs fetched by the page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.neighbour img')].every(i => i.complete && i.naturalWidth === 224)"
    )


def test_click_a_neighbour_searches_from_it(page, cat, tile_ids):
    tid = tile_ids[3]
    page.fill("#tile-id", tid)
    page.click("#search-tile")
    _wait_for_query(page, tid)
    second = _ids(page)[1]
    page.locator(".neighbour").nth(1).locator(".id").click()
    _wait_for_query(page, second)
    assert _ids(page)[0] == second
    assert page.input_value("#tile-id") == second


def test_provenance_opens_for_a_neighbour(page, tile_ids):
    page.locator(".neighbour").first.locator("button.provenance").click()
    page.wait_for_function(
        "() => document.getElementById('provenance').textContent.includes('leaf_hash')"
    )
    summary = page.text_content("#provenance-summary")
    assert "inclusion path" in summary and "verified by the service" in summary
    assert '"inclusion_path"' in page.text_content("#provenance")
    page.click("#close-provenance")


def test_search_by_position(page, cat):
    row = cat.metadata().iloc[2]
    page.fill("#ra", str(row["ra"]))
    page.fill("#dec", str(row["dec"]))
    page.fill("#radius", "5")
    page.select_option("#f-zoom", str(row["zoom"]))
    page.click("#search-position")
    _wait_for_query(page, "position")
    assert _ids(page)[0] == row["tile_id"]
    page.select_option("#f-zoom", "")


def test_search_by_uploaded_image_needs_and_uses_a_key(page, service, tile_ids, tmp_path):
    import requests

    tid = tile_ids[0]
    png = tmp_path / "query.png"
    png.write_bytes(requests.get(f"{service.url}/api/tiles/{tid}/cutout.png", timeout=30).content)
    page.set_input_files("#image-file", str(png))
    page.click("#search-image")  # anonymous callers may only read: the page says why
    page.wait_for_function("() => document.getElementById('status').className === 'error'")
    assert "API key is needed" in page.text_content("#status")
    page.fill("#api-key", service.secrets["imager"])
    page.dispatch_event("#api-key", "change")
    page.click("#search-image")
    _wait_for_query(page, "image query.png")
    assert _ids(page)[0] == tid
