"""The UI's pages through the test client on both backends: what they show, what they escape,
and the API's read rules (the browser itself: tests/test_ui.py)."""

from __future__ import annotations

from flask.testing import FlaskClient

from modelyard.web.context import Runtime
from tests.factories import make_version


def test_hostile_names_and_values_are_escaped(client: FlaskClient, anon: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers", metrics={"<b>acc</b>": 0.5, "f1": 0.7})
    make_version(runtime, "flowers", metrics={"<b>acc</b>": 0.6, "f1": 0.8})
    client.patch("/models/flowers", json={"description": "<script>alert(1)</script>",
                                          "tags": {"x": "\"><img src=x onerror=alert(1)>"}})
    for page in ("/ui/", "/ui/models/flowers", "/ui/models/flowers/versions/1", "/ui/models/flowers/compare"):
        html = anon.get(page).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>acc" not in html, page
    model = anon.get("/ui/models/flowers").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in model
    assert model.count('<svg class="chart"') == 2  # one chart per metric, drawn on the server


def test_missing_models_and_versions_are_html_404s(anon: FlaskClient) -> None:
    for page, words in (("/ui/models/nope", "model 'nope' not found"),
                        ("/ui/models/iris/versions/9", "no version or alias '9'")):
        response = anon.get(page)
        assert response.status_code == 404 and response.mimetype == "text/html"
        assert words in response.get_data(as_text=True).replace("&#39;", "'")


def test_the_audit_log_needs_a_token_as_in_the_api(client: FlaskClient, anon: FlaskClient) -> None:
    anonymous = anon.get("/ui/models/iris").get_data(as_text=True)
    assert 'id="events-need-token"' in anonymous and "data-needs-token" in anonymous
    assert 'id="events"' not in anonymous
    with_token = client.get("/ui/models/iris").get_data(as_text=True)
    assert 'id="events"' in with_token and "alias.set" in with_token


def test_compare_without_example_rows_says_so(anon: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    html = anon.get("/ui/models/flowers/compare?a=1&b=2").get_data(as_text=True)
    assert "no rows to compare on" in html


def test_each_page_is_one_request_under_200_kb(anon: FlaskClient, runtime: Runtime) -> None:
    for i in range(3):
        make_version(runtime, "flowers", metrics={"accuracy": 0.5 + i / 100})
    assets = sum(len(anon.get(f"/ui/static/{name}").data) for name in ("ui.css", "ui.js"))
    for page in ("/ui/", "/ui/models/flowers", "/ui/models/flowers/versions/1", "/ui/models/flowers/compare"):
        response = anon.get(page)
        assert response.status_code == 200, page
        html = response.get_data(as_text=True)
        assert len(response.data) + assets < 200_000, page
        assert "fetch(" not in html  # no per-row API calls: everything is in the page


def test_search_and_tag_filter_use_the_lists_filters(client: FlaskClient, anon: FlaskClient, runtime: Runtime) -> None:
    for name, team in (("fraud-a", "risk"), ("fraud-b", "growth"), ("churn", "risk")):
        assert client.post("/models", json={"name": name, "tags": {"team": team}}).status_code == 201

    def names(query: str) -> list[str]:
        html = anon.get(f"/ui/?{query}").get_data(as_text=True)
        return [n for n in ("fraud-a", "fraud-b", "churn", "iris") if f">{n}</a>" in html]

    assert names("q=FRAUD") == ["fraud-a", "fraud-b"]
    assert names("tag=team:risk") == ["fraud-a", "churn"]
    assert names("q=fraud&tag=team:risk") == ["fraud-a"]
    assert names("") == ["fraud-a", "fraud-b", "churn", "iris"]


def test_a_metric_of_one_version_is_one_level_line_labelled_once(anon: FlaskClient, runtime: Runtime) -> None:
    import re

    make_version(runtime, "flowers", metrics={"accuracy": 1})
    [svg] = re.findall(r'<svg class="chart".*?</svg>', anon.get("/ui/models/flowers").get_data(as_text=True))
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert labels == ["1", "v1"]  # the value once, and which version
    [(x, y)] = re.findall(r'<circle cx="([0-9.]+)" cy="([0-9.]+)"', svg)
    assert (float(x), float(y)) == (160.0, 45.0)  # in the middle, not on an axis end
    make_version(runtime, "flowers", metrics={"accuracy": 0.5})
    [svg] = re.findall(r'<svg class="chart".*?</svg>', anon.get("/ui/models/flowers").get_data(as_text=True))
    assert re.findall(r"<text[^>]*>([^<]*)</text>", svg) == ["1", "0.5", "v1", "v2"]


def test_the_download_asks_an_anonymous_reader_for_a_token_first(client: FlaskClient, anon: FlaskClient) -> None:
    anonymous = anon.get("/ui/models/iris/versions/1").get_data(as_text=True)
    assert 'data-token-first="downloading a model file needs a token' in anonymous
    assert 'data-token-first' not in client.get("/ui/models/iris/versions/1").get_data(as_text=True)


def test_the_model_page_shows_splits_shadows_and_history(client: FlaskClient, anon: FlaskClient,
                                                         runtime: Runtime) -> None:
    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers")
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 75, "2": 25}})
    client.put("/models/flowers/aliases/production/shadow", json={"version": 2, "fraction": 1.0})
    assert client.post("/models/flowers/production/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    page = " ".join(client.get("/ui/models/flowers").get_data(as_text=True).split())
    assert 'id="rollout"' in page and "v1 75.0%" in page and "v2 25.0%" in page
    assert "v2 on 100.0% of requests: 1 of 1 compared, 100.0% of rows alike, 0 failed" in page
    assert "v1:75 v2:25" in page and "alias.moved" in page  # the alias's history, with a token
    public = anon.get("/ui/models/flowers").get_data(as_text=True)
    assert "v1 75.0%" in public and 'class="history"' not in public  # history follows the audit log's rule
    make_version(runtime, "flowers")
    assert client.put("/models/flowers/aliases/production", json={"weights": {"1": 50, "2": 25, "3": 25}, "guard": {
        "metric": "error_rate", "max": 0.05, "window_seconds": 60, "min_samples": 10}}).status_code == 200
    page = " ".join(client.get("/ui/models/flowers").get_data(as_text=True).split())
    assert ("error_rate at most 0.05 over 60 s (at least 10 samples), else back to v1:75 v2:25 : v3 inconclusive"
            in page), page
