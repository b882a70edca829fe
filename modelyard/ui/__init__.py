"""The web UI at ``/ui``: server-rendered pages (Jinja, no build step) over the registry's read
side, one server request per page plus two small assets (``static/ui.css``, ``static/ui.js``).

Reads obey the API's policy: where the anonymous role may read, pages render for anyone; where it
may not, a page answers a form asking for a token, kept in the browser's ``sessionStorage`` and
sent as ``Authorization`` (never in a URL, a cookie or a log) when the script fetches the page
again. Actions (promote, roll back, edit description and tags, try a prediction, download) are
the script's calls to the REST API with that token, so they obey the same roles and protected
aliases, and show the API's own message when refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, render_template, request
from markupsafe import Markup, escape

from modelyard.registry import approvals, drift, guards, history, queries, shadows
from modelyard.registry.auth import Unauthorized, require, require_token_for
from modelyard.registry.errors import NoGuard, NoShadow, NotFound
from modelyard.web.auth import public
from modelyard.web.context import runtime, session

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
PAGE_SIZE = 25


def _page(view: Callable[..., str]) -> Callable[..., Any]:
    """A UI page: open to the request hook, then the reader role checked here (a form asking for
    a token instead of the API's JSON 401), and a missing model or version as an HTML 404."""

    def render(**kwargs: Any) -> Any:
        try:
            require(g.actor, "reader")
        except Unauthorized as exc:
            return Response(render_template("token.html", message=exc.message), status=401)
        try:
            return view(**kwargs)
        except NotFound as exc:
            return Response(render_template("error.html", message=exc.message), status=404)

    render.__name__ = view.__name__
    render.__doc__ = view.__doc__
    return public(render)


@bp.route("/")
@_page
def models_page() -> str:
    """Every model: aliases, latest version, version count, tags, last change; search and tag filter."""
    q, tag = request.args.get("q") or None, request.args.get("tag") or None
    page = max(1, request.args.get("page", 1, type=int) or 1)
    key, _, value = (tag or "").partition(":")
    found = queries.list_models(session(), q=q, tag=(key, value) if tag else None, offset=(page - 1) * PAGE_SIZE,
                                limit=PAGE_SIZE)
    total = found.total or 0
    return render_template("models.html", models=found.items, q=q or "", tag=tag or "", page=page,
                           pages=max(1, -(-total // PAGE_SIZE)), total=total)


@bp.route("/models/<name>")
@_page
def model_page(name: str) -> str:
    """A model: its versions newest first, each metric across versions, the event timeline."""
    runtime().predictor.flush_counts()  # before the page's read begins, so that it sees them
    db = session()
    model = queries.model_detail(db, name)
    versions = queries.list_versions(db, name, limit=100).items
    try:  # the audit log is a private read by default: the same rule as GET /models/<name>/events
        require_token_for(g.actor, "events", runtime().auth.private_reads)
        events: list[dict[str, Any]] | None = queries.list_events(db, name, limit=50).items
    except Unauthorized:
        events = None
    states = queries.model_aliases(db, name)
    rollout = []
    for alias, state in states.items():
        try:
            report: dict[str, Any] | None = shadows.report(db, name, alias)
        except NoShadow:
            report = None
        try:
            guard: dict[str, Any] | None = guards.status(db, name, alias) if isinstance(state, dict) else None
        except NoGuard:
            guard = None
        past = history.alias_history(db, name, alias, limit=10).items if events is not None else None
        rollout.append({"alias": alias, "state": state, "shadow": report, "guard": guard, "history": past,
                        "pending": approvals.pending(db, name, alias)})
    return render_template("model.html", model=model, versions=versions, events=events,
                           charts=_charts(versions), rollout=rollout)


@bp.route("/models/<name>/versions/<ref>")
@_page
def version_page(name: str, ref: str) -> str:
    """A version's whole detail, its download, and a try-predict form prefilled with its example."""
    rt = runtime()
    rt.predictor.flush_counts()  # this process's latest counts, before the page's read begins, so that it sees them
    version = queries.version_detail(session(), name, ref)
    try:  # a download is a private read by default: the page asks for the token before trying
        require_token_for(g.actor, "artifacts", runtime().auth.private_reads)
        download_needs_token = False
    except Unauthorized:
        download_needs_token = True
    since, until = drift.window_of("1h", None, None)
    report = drift.report(session(), name, str(version.version), since=since, until=until,
                          min_samples=rt.settings.observe.min_samples)
    judged = report["features"] + ([report["predictions"]] if report["predictions"] else [])
    return render_template("version.html", name=name, version=version, aliases=queries.model_aliases(session(), name),
                           download_needs_token=download_needs_token, drift=report,
                           drift_rows=[(f, _bins_chart(f)) for f in judged])


@bp.route("/models/<name>/compare")
@_page
def compare_page(name: str) -> str:
    """Two versions side by side: metadata, metrics, and their predictions on the same rows."""
    db = session()
    numbers = [v.version for v in queries.list_versions(db, name, limit=100).items]
    a = request.args.get("a") or (str(numbers[1]) if len(numbers) > 1 else str(numbers[0]) if numbers else "latest")
    b = request.args.get("b") or (str(numbers[0]) if numbers else "latest")
    left, right = queries.version_detail(db, name, a), queries.version_detail(db, name, b)
    rows = left.example or right.example or []
    rows = rows if isinstance(rows, list) else [rows]
    predictions = {}
    for side in (left, right):
        predictions[side.version] = runtime().predictor.predictions(session, name, str(side.version), rows) \
            if rows else []
    agree = sum(1 for p, q in zip(predictions[left.version], predictions[right.version], strict=False) if p == q)
    return render_template("compare.html", name=name, numbers=numbers, left=left, right=right, rows=rows,
                           predictions=predictions, agree=agree,
                           metrics=sorted(set(left.row.metrics) | set(right.row.metrics)))


def _charts(versions: list[queries.VersionView]) -> list[tuple[str, Markup]]:
    """Each numeric metric across the versions (oldest to newest) as a small inline SVG."""
    ordered = list(reversed(versions))
    names = sorted({k for v in ordered for k, x in v.row.metrics.items() if isinstance(x, (int, float))})
    return [(metric, _chart(metric, [(v.version, float(v.row.metrics[metric])) for v in ordered
                                     if isinstance(v.row.metrics.get(metric), (int, float))]))
            for metric in names]


def _bins_chart(feature: dict[str, Any]) -> Markup:
    """A feature's bins, the reference's share (grey) beside the last hour's (coloured), each bin
    labelled in its bar's title."""
    width, height, pad = 320, 70, 4
    bins = feature["bins"]
    top = max([b["reference"] for b in bins] + [b["live"] for b in bins] + [1e-9])
    slot = (width - 2 * pad) / max(1, len(bins))
    bars = []
    for i, b in enumerate(bins):
        for j, (kind, share) in enumerate((("reference", b["reference"]), ("live", b["live"]))):
            h = share / top * (height - 2 * pad)
            x, bar = pad + i * slot + j * slot / 2, max(slot / 2 - 1, 1)
            bars.append(f'<rect class="{kind}" x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar:.1f}" '
                        f'height="{h:.1f}"><title>{escape(b["bin"])}: {kind} {share:.1%}</title></rect>')
    svg = (f'<svg class="bins" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(feature["feature"])}: reference and live shares by bin">{"".join(bars)}</svg>')
    return Markup(svg)  # noqa: S704 - numbers and escaped names only


def _chart(metric: str, points: list[tuple[int, float]]) -> Markup:
    """A line of ``(version, value)`` points: the highest and lowest value at the top and bottom
    left, the first and last version along the bottom. One value (one version, or every version
    alike) is a level line in the middle, labelled once."""
    width, height, pad = 320, 90, 16
    values = [value for _, value in points]
    low, high = min(values), max(values)
    step = (width - 2 * pad) / max(1, len(points) - 1)
    xs = [width / 2] if len(points) == 1 else [pad + i * step for i in range(len(points))]
    labels: list[tuple[float, float, str, str]]  # x, y, anchor, text
    if high > low:
        ys = [height - pad - (value - low) / (high - low) * (height - 2 * pad) for value in values]
        labels = [(pad, 12, "start", f"{high:g}"), (pad, height - pad + 4, "start", f"{low:g}")]
    else:
        ys = [height / 2] * len(points)
        labels = [(pad, height / 2 - 8, "start", f"{high:g}")]
    first, last = points[0][0], points[-1][0]
    labels += ([(pad, height - 2, "start", f"v{first}"), (width - pad, height - 2, "end", f"v{last}")]
               if len(points) > 1 else [(width / 2, height - 2, "middle", f"v{first}")])
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>v{n}: {v:g}</title></circle>'
                   for x, y, (n, v) in zip(xs, ys, points, strict=True))
    text = "".join(f'<text x="{x:.0f}" y="{y:.0f}" text-anchor="{anchor}">{label}</text>'
                   for x, y, anchor, label in labels)
    svg = (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(metric)} by version"><polyline points="{line}" fill="none"/>{dots}{text}</svg>')
    return Markup(svg)  # noqa: S704 - numbers and an escaped name only
