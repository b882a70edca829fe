"""The web UI in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium; .ci/run
installs it; no browser download) against a real `modelyard serve`. Each page is screenshotted
under test-output/ui/ (the folder this test writes, not in git)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import fitted_logreg
from tests.serve_helpers import running_server, upload

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "ui"
CHROMIUM = "/usr/bin/chromium"
# As the machine's own probe runs it: no network of its own, no sandbox as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
EXAMPLE = [{"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2},
           {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8},
           {"sepal.length": 6.0, "sepal.width": 2.2, "petal.length": 4.0, "petal.width": 1.0}]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = "chromium is not installed (Debian's chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    shutil.rmtree(SHOTS, ignore_errors=True)  # this run's screenshots only
    SHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_server(tmp_path_factory.mktemp("ui"), workers=1) as running:
        yield running


def _api(server: dict[str, Any], method: str, path: str, body: bytes | None = None,
         content_type: str = "application/json") -> Any:
    request = urllib.request.Request(server["base"] + path, data=body, method=method, headers={
        "Authorization": f"Bearer {server['token']}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def _load(page: Any, url: str, shot: str) -> list[Any]:
    """Open ``url``; the page's screenshot; the responses it took (document and assets)."""
    responses: list[Any] = []
    def keep(response: Any) -> None:
        responses.append(response)

    page.on("response", keep)
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.remove_listener("response", keep)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    return responses


def _weight(responses: list[Any]) -> int:
    return sum(len(r.body()) for r in responses if r.status == 200)


def test_browse_search_predict_compare_promote_roll_back(browser: Any, server: dict[str, Any]) -> None:
    base = server["base"]
    page = browser.new_page()
    loaded = _load(page, f"{base}/ui/", "01-models")
    assert page.locator("#models").inner_text().count("iris") == 1
    assert len(loaded) == 3 and _weight(loaded) < 200_000  # the page and its two assets, nothing per row

    page.fill("input[name=q]", "IR")
    page.click("form.search button")
    page.wait_for_load_state("networkidle")
    assert "iris" in page.locator("#models").inner_text()
    page.fill("input[name=q]", "nothing-like-it")
    page.click("form.search button")
    assert "no model matches" in page.locator("#models").inner_text()

    _load(page, f"{base}/ui/", "01-models")
    page.click("text=iris")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / "02-model-iris.png"), full_page=True)
    versions = page.locator("#versions").inner_text()
    assert "v1" in versions and "production" in versions and "SVC" in versions
    assert "needs a token" in page.locator("#events-need-token").inner_text()  # private by default

    page.click("#versions >> text=v1")
    page.wait_for_load_state("networkidle")
    page.fill("textarea[name=body]", json.dumps(EXAMPLE))
    page.click("form[data-action=predict] button")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")
    answer = json.loads(page.locator("#answer").inner_text())
    assert answer["predictions"] == [0, 2, 1] and answer["labels"] == ["setosa", "virginica", "versicolor"]
    page.screenshot(path=str(SHOTS / "03-version-iris-1.png"), full_page=True)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.click("button[data-download]")  # no token yet: the page asks for it and sends nothing
    page.wait_for_selector("#message.error")
    assert "downloading a model file needs a token" in page.locator("#message").inner_text()
    assert page.evaluate("document.activeElement.id") == "token"
    assert not [url for url in requested if url.endswith("/artifact")]

    second = upload(server["base"], server["token"], "iris", pickle.dumps(fitted_logreg()), example=json.dumps(EXAMPLE),
                     features=json.dumps(list(EXAMPLE[0])), labels=json.dumps(["setosa", "versicolor", "virginica"]),
                     metadata=json.dumps({"metrics": {"accuracy": 0.97}}))
    assert second["version"] == 2
    _load(page, f"{base}/ui/models/iris", "04-model-two-versions")
    assert page.locator(".charts").count() == 1 and "accuracy" in page.locator(".charts").inner_text()
    page.select_option("form.compare select[name=a]", "1")
    page.select_option("form.compare select[name=b]", "2")
    page.click("form.compare button")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / "05-compare-1-2.png"), full_page=True)
    assert "they agree on 3 of 3 rows (100%)" in page.locator("#agreement").inner_text()
    assert "accuracy" in page.locator("#compare").inner_text()

    _load(page, f"{base}/ui/models/iris", "06-before-promote")
    page.select_option("form[data-action=promote] select[name=version]", "2")
    page.click("form[data-action=promote] button")  # no token yet: the API's own message
    page.wait_for_selector("#message.error")
    assert "token" in page.locator("#message").inner_text()
    page.fill("#token", server["token"])
    page.click("#token-form button[type=submit]")
    assert page.locator("#token-state").inner_text() == "token set"
    page.select_option("form[data-action=promote] select[name=version]", "2")
    page.click("form[data-action=promote] button")
    page.wait_for_selector("#message.ok >> text=production now points at version 2")
    assert "production" in page.locator("#versions tbody tr").first.inner_text()  # v2's row, newest first
    assert "alias.set" in page.locator("#events").inner_text() or "alias.moved" in page.locator("#events").inner_text()
    page.screenshot(path=str(SHOTS / "07-promoted.png"), full_page=True)
    page.click("form[data-action=rollback] button")
    page.wait_for_selector("#message.ok >> text=rolled back to version 1")
    assert _api(server, "GET", "/models/iris/aliases") == {"production": 1}
    page.screenshot(path=str(SHOTS / "08-rolled-back.png"), full_page=True)

    page.fill("form[data-action=edit] input[name=description]", "Iris, kept by the UI test")
    page.fill("form[data-action=edit] input[name=tags]", '{"team": "botany"}')
    page.click("form[data-action=edit] button")
    page.wait_for_selector(".description >> text=Iris, kept by the UI test")
    # the message is said by the reloaded page's script, which may run after its description is parsed
    page.wait_for_selector("#message.ok >> text=saved")
    assert _api(server, "GET", "/models/iris")["tags"] == {"team": "botany"}
    _load(page, f"{base}/ui/models/iris/versions/2", "09-version-iris-2")
    with page.expect_download() as download:  # the artifact is a private read: the token goes along
        page.click("button[data-download]")
    saved = download.value.path()
    assert hashlib.sha256(Path(saved).read_bytes()).hexdigest() == second["sha256"]
    assert download.value.suggested_filename == "iris-v2.pkl"

    _load(page, f"{base}/ui/models/iris", "10-edited")
    page.fill("form[data-action=edit] input[name=tags]", "not json")
    page.click("form[data-action=edit] button")
    page.wait_for_selector("#message.error")
    assert "tags must be a JSON object" in page.locator("#message").inner_text()
    page.close()


def test_a_registry_closed_to_anonymous_asks_for_a_token_first(browser: Any,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_server(tmp_path_factory.mktemp("closed"), workers=1, MODELYARD_AUTH_ANONYMOUS_ROLE="none") as closed:
        page = browser.new_page()
        response = page.goto(f"{closed['base']}/ui/")
        assert response is not None and response.status == 401
        assert "A token is needed" in page.locator("h1").inner_text()
        assert "iris" not in page.content()
        page.screenshot(path=str(SHOTS / "11-token-needed.png"), full_page=True)
        page.fill("#token", closed["token"])
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#models")
        assert "iris" in page.locator("#models").inner_text()
        assert closed["token"] not in page.url
        page.screenshot(path=str(SHOTS / "12-models-with-token.png"), full_page=True)
        page.close()
