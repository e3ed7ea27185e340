"""``omnizip serve``'s web page at ``/`` in a real headless Chromium (Playwright), on the tiny model.

The page uploads ``samples/talking.mp4`` through its file input, asks, streams the answer, and shows
the token table, the time to first token and the keep map; a follow-up re-sends the conversation; an
API key typed into the page is sent, and a wrong one shows the server's 401 message. Screenshots are
written under the test's ``tmp_path`` and copied to ``$OMNIZIP_TEST_ARTEFACTS`` when it is set.

Without Playwright or a Chromium executable (``$OMNIZIP_CHROMIUM``, else ``chromium`` /
``chromium-browser`` on the PATH, else ``/usr/bin/chromium``) the browser tests are skipped, unless
``OMNIZIP_REQUIRE_BROWSER=1`` (CI sets it), where they fail. Playwright never downloads a browser
here: it drives the system one.

Also here, without a browser: the keep map route's answers (a PNG, or an OpenAI-style 404).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.serving import SAMPLES, running_server

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
#: Generous: the first answer opens the video (tiny model: well under a second on a CPU).
ANSWER_TIMEOUT_MS = 60_000
KEY = "s3cret-key"


def chromium_executable() -> str | None:
    given = os.environ.get("OMNIZIP_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("OMNIZIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and OMNIZIP_REQUIRE_BROWSER=1 forbids skipping the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install playwright)")
    executable = chromium_executable()
    if executable is None:
        skip_or_fail("no Chromium executable (apt-get install chromium, or set OMNIZIP_CHROMIUM)")
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        except Exception as exc:  # noqa: BLE001 - a browser that does not start is a skip (or a failure)
            skip_or_fail(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()


def save_artefact(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get("OMNIZIP_TEST_ARTEFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(folder) / name)
    return path


def new_page(browser: Any, **context: Any) -> tuple[Any, Any, list[str]]:
    context_ = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = context_.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context_, page, errors


def token_rows(page: Any) -> dict[str, tuple[int, int, float]]:
    """The token table: modality -> (before, after, kept %)."""
    rows = page.eval_on_selector_all(
        "#tokens tbody tr", "rows => rows.map(r => [r.dataset.modality, ...[...r.cells].map(c => c.textContent)])")
    number = lambda text: int(text.replace(",", ""))  # noqa: E731
    return {key: (number(before), number(after), float(kept.split()[0])) for key, _label, before, after, kept in rows}


def ask(page: Any, question: str, answers: int) -> dict[str, Any]:
    """Type and ask ``question`` (the ``answers``-th answer); the chat request's body."""
    from playwright.sync_api import expect

    page.fill("#question", question)
    with page.expect_request("**/v1/chat/completions") as request:
        page.click("#ask")
    expect(page.locator("#conversation .assistant[data-state=done]")).to_have_count(answers, timeout=ANSWER_TIMEOUT_MS)
    return request.value.post_data_json


@pytest.fixture(scope="module")
def server(tiny_model: Any) -> Iterator[Any]:
    with running_server(tiny_model) as running:
        yield running


def test_the_page_uploads_asks_streams_and_shows_what_was_kept(browser: Any, server: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    context, page, errors = new_page(browser)
    try:
        page.goto(server.url + "/")
        expect(page).to_have_title("omnizip serve")
        expect(page.locator("#model")).to_have_text(server.settings.model_name)
        page.set_input_files("#file", str(SAMPLES / "talking.mp4"))
        expect(page.locator("#upload-status")).to_contain_text("Uploaded talking.mp4", timeout=20_000)
        page.select_option("#compression", "45")

        body = ask(page, "What is said in the video?", 1)
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["omnizip"] == {"preset": "45"}
        (message,) = body["messages"]
        assert message["role"] == "user"
        media, text = message["content"]
        assert media["type"] == "video_url" and media["video_url"]["url"].startswith("file://")
        assert text == {"type": "text", "text": "What is said in the video?"}

        answer = page.locator("#conversation .assistant .text").first.text_content()
        assert answer, "the streamed answer is shown"
        expect(page.locator("#stats")).to_be_visible()
        expect(page.locator("#error")).to_be_hidden()
        rows = token_rows(page)
        assert {"video", "audio", "text", "total"} <= set(rows)
        for key, (before, after, kept) in rows.items():
            assert 0 < after <= before, key
            assert kept == pytest.approx(after / before * 100, abs=0.05), key
        assert rows["video"][1] < rows["video"][0], "preset 45 drops video tokens"
        assert rows["total"][0] == rows["video"][0] + rows["audio"][0] + rows["text"][0]
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.locator("#ttft").text_content())
        assert page.locator("#prefix-source").text_content().startswith("fresh")
        assert page.locator("#prompt-tokens").text_content() == f"{rows['total'][0]:,} → {rows['total'][1]:,}"

        keep_map = page.locator("#keep-map")
        expect(keep_map).to_be_visible(timeout=30_000)
        width, height = keep_map.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert width > 200 and height > 200
        # titled with the name of the file picked, not the SHA-256 the upload is stored under
        fetched = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith("/keep-map.png?title=talking.mp4") for url in fetched), fetched

        # a follow-up re-sends the conversation, the media in the first user message only
        first_answer = page.locator("#conversation .assistant .text").first.text_content()
        body = ask(page, "And then?", 2)
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        assert body["messages"][1]["content"] == first_answer
        assert body["messages"][2]["content"] == [{"type": "text", "text": "And then?"}]
        assert page.locator("#prefix-source").text_content() != "–"
        expect(page.locator("#conversation .msg")).to_have_count(4)
        save_artefact(page, tmp_path, "web-page.png")

        # a new conversation starts from the media again
        page.click("#reset")
        expect(page.locator("#conversation .msg")).to_have_count(0)
        body = ask(page, "Who speaks?", 1)
        assert len(body["messages"]) == 1

        # the narrow layout (a phone) has everything in one column
        page.set_viewport_size({"width": 390, "height": 844})
        boxes = [page.locator(f"#{name}").bounding_box() for name in ("media-panel", "chat-panel", "stats")]
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
        assert all(box["x"] + box["width"] <= 390 for box in boxes)
        save_artefact(page, tmp_path, "web-page-narrow.png")
        assert errors == []
    finally:
        context.close()


def test_the_page_sends_the_api_key_and_shows_a_wrong_one(browser: Any, tiny_model: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with running_server(tiny_model, api_key=KEY) as running:
        context, page, errors = new_page(browser)
        try:
            page.goto(running.url + "/")
            page.fill("#api-key", "wrong-key")
            page.set_input_files("#file", str(SAMPLES / "talking.mp4"))
            expect(page.locator("#error")).to_contain_text("401", timeout=20_000)
            expect(page.locator("#error")).to_contain_text("a valid API key is required")
            expect(page.locator("#upload-status")).to_have_text("Upload failed.")

            # the right key, then asking uploads again and answers; compression off keeps every token
            page.fill("#api-key", KEY)
            expect(page.locator("#error")).to_be_hidden()
            page.select_option("#compression", "off")
            body = ask(page, "What is in the video?", 1)
            assert body["omnizip"] == {"enabled": False}
            expect(page.locator("#upload-status")).to_contain_text("Uploaded talking.mp4")
            rows = token_rows(page)
            assert rows["video"][0] == rows["video"][1] and rows["video"][2] == 100.0
            assert page.evaluate("localStorage.getItem('omnizip.apiKey')") == KEY
            # the keep map, or the note saying why there is none
            expect(page.locator("#keep-map-note")).not_to_have_text("Loading the keep map …", timeout=30_000)
            if page.locator("#keep-map").is_hidden():
                expect(page.locator("#keep-map-note")).to_contain_text("No keep map")

            # the key stays in this browser; a wrong one now fails the question with the 401 message
            page.reload()
            expect(page.locator("#api-key")).to_have_value(KEY)
            page.set_input_files("#file", str(SAMPLES / "talking.mp4"))
            expect(page.locator("#upload-status")).to_contain_text("Uploaded talking.mp4", timeout=20_000)
            page.fill("#api-key", "wrong-again")
            page.fill("#question", "Anything?")
            page.click("#ask")
            expect(page.locator("#error")).to_contain_text("401: a valid API key is required")
            expect(page.locator("#conversation .msg")).to_have_count(0)
            expect(page.locator("#question")).to_have_value("Anything?")
            save_artefact(page, tmp_path, "web-page-wrong-key.png")
            assert errors == []
        finally:
            context.close()


# ---------------------------------------------------------------------------------- the route alone
def test_keep_map_route(server: Any) -> None:
    import httpx

    missing = httpx.get(f"{server.url}/v1/prefixes/0123456789abcdef/keep-map.png")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "prefix_not_found"

    client = server.client()
    answer = client.chat.completions.create(model="omnizip", messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": str(SAMPLES / "talking.mp4")}},
        {"type": "text", "text": "What?"}]}], extra_body={"omnizip": {"preset": "35"}})
    prefix_id = answer.model_extra["omnizip"]["prefix_id"]
    first = httpx.get(f"{server.url}/v1/prefixes/{prefix_id}/keep-map.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert httpx.get(f"{server.url}/v1/prefixes/{prefix_id}/keep-map.png").content == first.content  # kept
    # ?title= names the picture (the page sends the name of the file it uploaded): the same map, titled so
    from omnizip_cli.serve.engine import render_keep_map_png

    held = server.engine.by_id[prefix_id]
    titled = httpx.get(f"{server.url}/v1/prefixes/{prefix_id}/keep-map.png", params={"title": "my clip.mp4"})
    assert titled.status_code == 200 and titled.content != first.content
    assert titled.content == render_keep_map_png(held, "my clip.mp4")
    assert held.keep_map.title == "talking.mp4"  # the kept data is untouched
    for bad in ("", "x" * 201, "two\nlines"):
        refused = httpx.get(f"{server.url}/v1/prefixes/{prefix_id}/keep-map.png", params={"title": bad})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_title", bad


def test_keep_map_route_without_the_data(tiny_model: Any) -> None:
    """A prefix whose frames and plan were dropped: a 404 that says so (never a 500)."""
    import httpx

    with running_server(tiny_model) as running:
        client = running.client()
        answer = client.chat.completions.create(model="omnizip", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": str(SAMPLES / "talking.mp4")}},
            {"type": "text", "text": "What?"}]}])
        prefix_id = answer.model_extra["omnizip"]["prefix_id"]
        held = running.engine.by_id[prefix_id]
        held.keep_map = None  # as for a prefix read from the disk cache
        response = httpx.get(f"{running.url}/v1/prefixes/{prefix_id}/keep-map.png")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "keep_map_unavailable" and prefix_id in error["message"]
