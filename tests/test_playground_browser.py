"""The playground and /docs in a real browser: Debian's Chromium driven by Playwright, against the service
on a real port over a real index (real anime embedded by the demo's text model; a few of them given
synthetic covers, since the tiny CLIP is random and pictures must be generated).

Every request the browser makes outside the service is refused, as on a machine without internet
access: covers on other hosts then fail to load and show the placeholder, and a page that needed a CDN
would break here. A console error other than a failed load (a refused cover, an API answer of 4xx
the test asked for) fails the test, and so does a Content-Security-Policy violation, which Chromium
reports there.

The run leaves screenshots and the page's measured weight and time to first result in
`var/playground/` (README "Playground" shows one of the screenshots).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest

from service.domain.documents import AnimeDocument
from service.security.auth import new_key
from tests.builders import encode_image, ingest_documents, synthetic_cover
from tests.conftest import ROOT, copy_index, real_index_documents, real_settings
from tests.processes import ServiceThread

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium")
ARTIFACTS = ROOT / "var" / "playground"
DEATH_NOTE = "bangumi-1773"
YOUR_NAME = "bangumi-160209"
# Asked by plot, with no title in it: the real index ranks this anime first (tests/test_search_real.py).
PLOT = "a boy finds a notebook that kills anyone whose name is written in it"
PICTURED = 12  # anime re-ingested with a synthetic cover (Your Name and Death Note among them)
SEARCH_KEY, SEARCH_ENTRY = new_key("playground", "search")
COVER_HOST = "https://covers.example"
FIRST_LOAD_BUDGET = 100 * 1024  # bytes, covers aside (the quality bar)


def cover_png(seed: int) -> bytes:
    return encode_image(synthetic_cover(seed), "PNG")


@pytest.fixture(scope="module")
def pictured(bangumi_documents: list[AnimeDocument]) -> dict[str, int]:
    """Anime id -> the seed of its synthetic cover."""
    wanted = [DEATH_NOTE, YOUR_NAME]
    anime = [d for d in real_index_documents(bangumi_documents) if d.type != "LIVE_ACTION"]
    wanted += [d.anime_id for d in anime if d.anime_id not in wanted][: PICTURED - len(wanted)]
    return {anime_id: seed for seed, anime_id in enumerate(wanted)}


@pytest.fixture(scope="module")
def playground_index(
    real_repository: Path,
    real_index: Path,
    bangumi_documents: list[AnimeDocument],
    pictured: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The real index, with covers for `pictured` (their documents re-ingested with picture data)."""
    index = copy_index(real_index, tmp_path_factory.mktemp("playground") / "q")
    by_id = {d.anime_id: d for d in bangumi_documents}
    documents = [
        msgspec.structs.replace(
            by_id[anime_id],
            picture_data=base64.b64encode(cover_png(seed)).decode(),
            picture=f"{COVER_HOST}/{anime_id}.png",
        )
        for anime_id, seed in pictured.items()
    ]

    report = ingest_documents(real_settings(real_repository, index), documents)
    assert report.image_problems == []
    return index


def _serve(repository: Path, index: Path, destination: Path, **overrides: object) -> Iterator[ServiceThread]:
    settings = real_settings(repository, copy_index(index, destination), log_level="WARNING", **overrides)
    with ServiceThread(settings) as service:
        yield service


@pytest.fixture(scope="module")
def service(real_repository: Path, playground_index: Path, tmp_path_factory) -> Iterator[ServiceThread]:
    yield from _serve(real_repository, playground_index, tmp_path_factory.mktemp("served") / "q")


@pytest.fixture(scope="module")
def keyed_service(real_repository: Path, playground_index: Path, tmp_path_factory) -> Iterator[ServiceThread]:
    yield from _serve(
        real_repository, playground_index, tmp_path_factory.mktemp("keyed") / "q", api_keys=SEARCH_ENTRY
    )


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs the Debian package")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Page:
    """A browser tab that reaches only `origin`, and what its console said."""

    def __init__(self, browser, origin: str, covers: dict[str, int], **context: object) -> None:
        self.origin = origin
        self.covers = covers
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        self.page.route("**/*", self._offline)

    def _offline(self, route) -> None:
        url = route.request.url
        if url.startswith(self.origin):
            route.continue_()
        elif url.startswith(COVER_HOST):  # the one image host "online": it has the synthetic covers
            seed = self.covers.get(url.removeprefix(f"{COVER_HOST}/").removesuffix(".png"))
            if seed is None:
                route.fulfill(status=404)
            else:
                route.fulfill(body=cover_png(seed), content_type="image/png")
        else:
            route.abort("internetdisconnected")

    def _console(self, message) -> None:
        # A refused cover and a 4xx the test provoked are logged as failed loads; anything else is not ok.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def open(self, path: str = "/playground") -> None:
        self.page.goto(self.origin + path)
        self.settle()

    def settle(self) -> None:
        """Wait until the page has no search in flight."""
        self.page.wait_for_selector('body[data-busy="no"]', state="attached", timeout=60_000)

    def facets_loaded(self) -> None:
        self.page.wait_for_selector('body[data-facets="loaded"]', state="attached", timeout=30_000)

    def search(self, text: str) -> None:
        self.page.fill("#q", text)
        self.page.press("#q", "Enter")
        self.settle()

    def result_ids(self) -> list[str]:
        return self.page.locator("#results > li").evaluate_all("cards => cards.map(c => c.dataset.animeId)")

    def close(self) -> None:
        self.context.close()
        assert self.problems == [], self.problems


@pytest.fixture
def tab(service: ServiceThread, browser, pictured: dict[str, int]) -> Iterator[Page]:
    page = Page(browser, service.base, pictured, viewport={"width": 1280, "height": 900})
    yield page
    page.close()


def api(service: ServiceThread, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, service.base + path, timeout=60, **kwargs)


def save_artifact(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "measurements.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, name: data}, indent=1))


# -- the page itself ----------------------------------------------------------------------------


def test_text_search_by_plot_shows_the_anime_first_with_query_info(tab: Page) -> None:
    tab.open()
    for _ in range(6):  # keyboard only: the text box is reached with Tab, past the header's controls
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("() => document.activeElement.id") == "q":
            break
    tab.page.keyboard.type(PLOT)
    tab.page.keyboard.press("Enter")
    tab.settle()
    assert tab.result_ids()[0] == DEATH_NOTE
    first = tab.page.locator("#results > li").first
    assert first.locator(".title").inner_text() == "DEATH NOTE"
    # Its other names, one per script: the Japanese and the Chinese ones (kept among its synonyms).
    assert first.locator(".scripts").inner_text() == "デスノート · 死亡笔记"
    info = tab.page.locator("#info").inner_text()
    assert re.search(r"latency\s+\d+ ms", info) and "hybrid" in info
    # Its cover comes from its image host; a cover that cannot load shows the placeholder instead.
    first.locator("img.cover").wait_for()
    assert first.locator("img.cover").evaluate("i => i.complete && i.naturalWidth > 0")
    tab.page.locator("div.cover.missing").first.wait_for()
    assert parse_qs(urlsplit(tab.page.url).query)["q"] == [PLOT]
    first.locator("summary").click()
    assert "title" in first.locator(".why").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "playground-text.png"))


def test_filters_come_from_the_collection_and_narrow_the_results(tab: Page, service: ServiceThread) -> None:
    tab.open()
    tab.facets_loaded()
    facets = api(service, "GET", "/api/v1/facets", params={"limit": 200}).json()
    offered = tab.page.locator("#genres option").evaluate_all("os => os.map(o => [o.value, o.textContent])")
    assert offered == [[f["value"], f"{f['value']} ({f['count']})"] for f in facets["genres"]]
    genre = facets["genres"][3]["value"]  # not the commonest: the filter must do the work
    tab.page.select_option("#genres", [genre])
    tab.page.fill("#year-min", "2000")
    tab.search("a story about friendship")
    cards = tab.page.locator("#results > li")
    assert cards.count() > 0
    for i in range(cards.count()):
        card = cards.nth(i)
        assert genre in card.locator(".chips span").all_inner_texts()
        assert int(card.locator(".meta").inner_text().split(" · ")[0]) >= 2000
    query = parse_qs(urlsplit(tab.page.url).query)
    assert query["genres"] == [genre] and query["year_min"] == ["2000"]


def test_a_picture_finds_its_anime(tab: Page, pictured: dict[str, int], tmp_path: Path) -> None:
    tab.open()
    cover = tmp_path / "cover.png"
    cover.write_bytes(cover_png(pictured[YOUR_NAME]))
    tab.page.set_input_files("#picture", str(cover))
    tab.page.locator("#preview").wait_for()
    tab.settle()
    assert tab.result_ids()[0] == YOUR_NAME
    assert re.search(r"lists\s+[^\n]*picture", tab.page.locator("#info").inner_text())


def test_a_picture_can_be_dropped_or_pasted(tab: Page, pictured: dict[str, int]) -> None:
    """The two other ways to give a picture: each one searches with it at once."""
    tab.open()
    (dropped, pasted) = [anime_id for anime_id in pictured if anime_id != DEATH_NOTE][:2]
    for anime_id, event in ((dropped, "drop"), (pasted, "paste")):
        if tab.page.locator("#preview").is_visible():
            tab.page.click("#clear-picture")  # so that the next preview says the new picture is read
        carried = tab.page.evaluate_handle(
            """b64 => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], "cover.png", {type: "image/png"}));
                return data;
            }""",
            base64.b64encode(cover_png(pictured[anime_id])).decode(),
        )
        if event == "drop":
            tab.page.dispatch_event("#drop", "drop", {"dataTransfer": carried})
        else:
            tab.page.evaluate(
                "data => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data}))", carried
            )
        tab.page.locator("#preview").wait_for()
        tab.settle()
        assert tab.result_ids()[0] == anime_id, event


def test_the_weight_sliders_change_the_order(tab: Page, pictured: dict[str, int], tmp_path: Path) -> None:
    """Text of one anime, the cover of another: whichever side weighs more decides the first result."""
    tab.open()
    tab.page.fill("#q", PLOT)
    cover = tmp_path / "cover.png"
    cover.write_bytes(cover_png(pictured[YOUR_NAME]))
    tab.page.set_input_files("#picture", str(cover))  # a picture with text: a multimodal search
    tab.page.locator("#preview").wait_for()  # read: its search has started
    tab.settle()
    for slider, key in (("#tw", "End"), ("#iw", "Home")):  # the keyboard moves a slider
        tab.page.focus(slider)
        tab.page.keyboard.press(key)
        tab.settle()
    assert tab.result_ids()[0] == DEATH_NOTE
    assert "text 1" in tab.page.locator("#info").inner_text()
    for slider, key in (("#tw", "Home"), ("#iw", "End")):
        tab.page.focus(slider)
        tab.page.keyboard.press(key)
        tab.settle()
    assert tab.result_ids()[0] == YOUR_NAME
    tab.page.select_option("#ranking", "rrf")
    tab.settle()
    assert "rrf" in tab.page.locator("#info").inner_text()
    first = tab.page.locator("#results > li").first
    first.locator("summary").click()
    assert "Part scores" in first.locator(".why").inner_text()
    tab.page.screenshot(path=str(ARTIFACTS / "playground-multimodal.png"), full_page=True)


def test_more_like_this_and_its_link(tab: Page, browser, service: ServiceThread) -> None:
    tab.open()
    tab.search(PLOT)
    first = tab.page.locator("#results > li").first
    first.get_by_role("button", name="More like DEATH NOTE: content").click()
    tab.settle()
    assert tab.page.locator("#answer-title").inner_text() == "More like DEATH NOTE (content)"
    similar = tab.result_ids()
    expected = api(service, "GET", f"/api/v1/similarity/anime/{DEATH_NOTE}", params={"limit": 10}).json()
    assert similar == [r["anime_id"] for r in expected["results"]] and DEATH_NOTE not in similar
    assert parse_qs(urlsplit(tab.page.url).query)["similar"] == [f"anime:{DEATH_NOTE}"]
    # Back returns to the search the list came from.
    tab.page.go_back()
    tab.settle()
    assert tab.result_ids()[0] == DEATH_NOTE


def test_a_shared_link_reproduces_the_search(
    tab: Page, browser, service: ServiceThread, pictured: dict[str, int]
) -> None:
    tab.open()
    tab.facets_loaded()
    tab.page.select_option("#type", ["TV", "MOVIE"])
    tab.page.select_option("#mode", "dense")
    tab.page.select_option("#limit", "20")
    tab.search("two girls start a band in high school")
    shown = tab.result_ids()
    link = tab.page.url
    other = Page(browser, service.base, pictured, viewport={"width": 1280, "height": 900})
    try:
        other.page.goto(link)
        other.settle()
        assert other.result_ids() == shown and len(shown) > 10
        assert other.page.input_value("#q") == "two girls start a band in high school"
        assert other.page.input_value("#mode") == "dense"
        types = other.page.locator("#type").evaluate("s => Array.from(s.selectedOptions, o => o.value)")
        assert sorted(types) == ["MOVIE", "TV"]
        first_result_ms = other.page.evaluate(
            "() => performance.getEntriesByName('avs-first-results')[0].startTime"
        )
        save_artifact("time_to_first_result_ms", {"shared_link": round(first_result_ms)})
    finally:
        other.close()


def test_a_corrupt_picture_shows_the_apis_own_error(
    tab: Page, service: ServiceThread, tmp_path: Path
) -> None:
    corrupt = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # a PNG signature, then nothing that decodes
    expected = api(
        service, "POST", "/api/v1/search/image", json={"image": base64.b64encode(corrupt).decode()}
    ).json()
    tab.open()
    path = tmp_path / "broken.png"
    path.write_bytes(corrupt)
    tab.page.set_input_files("#picture", str(path))
    tab.page.locator("#preview").wait_for()  # read: its search has started
    tab.settle()
    error = tab.page.locator("#error")
    assert error.is_visible()
    text = error.inner_text()
    assert expected["error"]["code"] in text and expected["error"]["message"] in text
    assert f"HTTP {expected['status_code']}" in text
    assert tab.result_ids() == []


def test_an_api_key_is_asked_for_and_kept_in_memory_only(
    browser, keyed_service: ServiceThread, pictured: dict[str, int]
) -> None:
    tab = Page(browser, keyed_service.base, pictured, viewport={"width": 1280, "height": 900})
    try:
        tab.open()
        # The filters' choices load after the page is idle: their 401 is what asks for the key.
        tab.page.wait_for_selector('#message:has-text("needs an API key")', timeout=30_000)
        tab.search(PLOT)
        assert "401" in tab.page.locator("#error").inner_text()
        assert tab.page.evaluate("() => document.activeElement.id") == "api-key"
        tab.page.fill("#api-key", SEARCH_KEY)
        tab.page.press("#api-key", "Tab")  # leaving the field keeps the key, and loads the filters
        tab.facets_loaded()
        tab.page.press("#q", "Enter")
        tab.settle()
        assert tab.result_ids()[0] == DEATH_NOTE
        stored = tab.page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
        assert stored == [0, 0, ""] and SEARCH_KEY not in tab.page.url
    finally:
        tab.close()


def test_the_page_is_small_labelled_and_fits_a_phone(
    browser, service: ServiceThread, pictured: dict[str, int]
) -> None:
    tab = Page(browser, service.base, pictured, viewport={"width": 375, "height": 740}, is_mobile=True)
    loaded: list = []
    tab.page.on("response", lambda response: loaded.append(response))
    try:
        answer = tab.page.goto(service.base + "/playground")
        tab.facets_loaded()
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "img-src * data: blob:" in csp
        weight = sum(len(r.body()) for r in loaded if r.request.resource_type != "image")
        save_artifact("first_load_bytes", {"page_and_files_and_facets": weight})
        assert weight < FIRST_LOAD_BUDGET, weight
        unnamed = tab.page.locator("input, select, button, textarea").evaluate_all(
            """controls => controls.filter(c => !(c.labels && c.labels.length)
                && !c.getAttribute('aria-label') && !(c.tagName === 'BUTTON' && c.textContent.trim()))
                .map(c => c.outerHTML)"""
        )
        assert unnamed == []
        tab.search(PLOT)
        assert tab.result_ids()[0] == DEATH_NOTE
        width = tab.page.evaluate("() => document.scrollingElement.scrollWidth")
        assert width <= 375, f"the page scrolls sideways on a phone: {width}px"
        tab.page.screenshot(path=str(ARTIFACTS / "playground-phone.png"))
    finally:
        tab.close()


def test_docs_render_the_operations_offline(tab: Page, service: ServiceThread) -> None:
    assert api(service, "GET", "/").json()["playground"] == "/playground"  # the service names its page
    document = api(service, "GET", "/docs/openapi.json").json()
    operations = sum(len(item) for item in document["paths"].values())
    tab.page.goto(service.base + "/docs")
    tab.page.locator(".opblock").first.wait_for(timeout=30_000)
    assert tab.page.locator(".opblock").count() == operations
    assert tab.page.get_by_text("Anime Vector Service").first.is_visible()
