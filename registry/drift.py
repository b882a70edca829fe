"""Drift: how a version's live inputs (and predictions) over a window compare with its reference
profile, feature by feature, from the bin counts every server adds up (``registry.observe``).

For each feature: the reference's and the window's share of each bin, the population stability
index (``psi``: sum of (live - reference) * ln(live / reference) over the bins, a share of 0 taken
as :data:`EPSILON` so that an empty bin gives a large finite score, as Evidently and NannyML do),
the Jensen-Shannon distance (base 2: 0 the same, 1 disjoint; no smoothing), the change of the
missing rate, the samples, and a verdict by PSI: ``none`` below 0.1, ``moderate`` below 0.25,
else ``significant``. A feature with fewer than ``min_samples`` values in the window is
``insufficient``, with no score: a handful of rows says nothing, and saying so is better than a
number that looks like a finding.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry import writes
from modelyard.registry.db import begin_write
from modelyard.registry.errors import InvalidInput
from modelyard.registry.introspect import STRING
from modelyard.registry.observe import BUCKET_SECONDS, MISSING_BIN, bucket_of
from modelyard.registry.observe_tables import DriftCount, DriftVerdict
from modelyard.registry.profile import OTHER
from modelyard.registry.refs import resolve_version

EPSILON = 1e-4
MODERATE, SIGNIFICANT = 0.1, 0.25
VERDICTS = ("insufficient", "none", "moderate", "significant")  # in order of concern
CHECK_WINDOW = dt.timedelta(hours=1)  # what serving's periodic check (the gauges, the event) looks back over
CHECK_EVERY_S = 60.0
WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}


def window_of(window: str | None, since: dt.datetime | None, until: dt.datetime | None,
              now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The window asked for: ``window`` back from now (default 1h), or ``since``/``until``. Its
    start is rounded down to the counts' bucket (the precision they are kept at)."""
    now = now or dt.datetime.now(dt.UTC)
    if window is not None and since is not None:
        raise InvalidInput("give window or since/until, not both", errors={"window": window})
    if window is not None and window not in WINDOWS:
        raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}, got {window!r}", errors={"window": window})
    end = until or now
    start = since or end - WINDOWS[window or "1h"]
    if start >= end:
        raise InvalidInput("since must be before until", errors={"since": str(start), "until": str(end)})
    return bucket_of(start), end


def report(session: Session, name: str, ref: str, *, since: dt.datetime, until: dt.datetime,
           min_samples: int) -> dict[str, Any]:
    """The version's drift over [since, until): per feature (and for its predictions, when the
    reference's were profiled) the shares, scores and verdict; the worst verdict overall.
    Raises ModelNotFound / VersionNotFound (404)."""
    version = resolve_version(session, name, ref)
    head = {"model": name, "version": version.version, "since": since, "until": until,
            "bucket_seconds": BUCKET_SECONDS, "min_samples": min_samples}
    profile = version.profile
    if not profile:
        return {**head, "verdict": "no reference", "reference_rows": 0, "features": [], "predictions": None,
                "message": f"version {version.version} of {name!r} was uploaded without a reference: upload it "
                           "again with `reference` (training rows) to compare its traffic with them"}
    counts = _counts(session, version.id, since, until)
    features = [feature_drift(feature, entry, counts.get((False, feature), {}), min_samples)
                for feature, entry in profile["features"].items()]
    predicted = profile.get("predictions")
    predictions = (feature_drift("prediction", predicted, counts.get((True, ""), {}), min_samples)
                   if predicted else None)
    verdicts = [f["verdict"] for f in features] + ([predictions["verdict"]] if predictions else [])
    return {**head, "verdict": max(verdicts, key=VERDICTS.index) if verdicts else "insufficient",
            "reference_rows": profile["rows"], "features": features, "predictions": predictions}


def check(session: Session, name: str, ref: str, *, min_samples: int,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """Drift over the last :data:`CHECK_WINDOW` (what each serving process runs every
    :data:`CHECK_EVERY_S` for the versions it counted), kept as each feature's verdict; a feature
    (or the predictions) that becomes ``significant`` is recorded once, as the event
    ``version.drift_significant`` (and so sent to the webhooks that ask for it), by whichever
    process saw it first. ``insufficient`` keeps the verdict before it: a quiet hour neither raises
    nor clears an alarm. Returns the report."""
    now = now or dt.datetime.now(dt.UTC)
    since, until = window_of(None, now - CHECK_WINDOW, now, now)
    found = report(session, name, ref, since=since, until=until, min_samples=min_samples)
    session.rollback()
    judged = [(False, f) for f in found["features"]] + ([(True, found["predictions"])] if found["predictions"] else [])
    judged = [(output, f) for output, f in judged if f["verdict"] != "insufficient"]
    if not judged:
        return found
    version = resolve_version(session, name, str(found["version"]))
    begin_write(session)
    try:
        for output, feature in judged:
            key = "" if output else feature["feature"]
            row = session.get(DriftVerdict, (version.id, output, key), with_for_update=True)
            if row is None:
                row = DriftVerdict(version_id=version.id, output=output, feature=key, verdict="none")
                session.add(row)
            if feature["verdict"] == "significant" and row.verdict != "significant":
                writes.record(session, name, "version.drift_significant", "drift", version=version.version,
                              before={"verdict": row.verdict},
                              after={"feature": feature["feature"], "output": output, "psi": feature["psi"],
                                     "js_distance": feature["js_distance"], "samples": feature["samples"],
                                     "since": since.isoformat(), "until": until.isoformat()})
            row.verdict, row.psi, row.checked_at = feature["verdict"], feature["psi"], now
        session.commit()
    except IntegrityError:  # another process added the same feature's first verdict: it judged this round
        session.rollback()
    except BaseException:
        session.rollback()
        raise
    return found


def _counts(session: Session, version_id: int, since: dt.datetime,
            until: dt.datetime) -> dict[tuple[bool, str], dict[int, int]]:
    query = (select(DriftCount.output, DriftCount.feature, DriftCount.bin, func.sum(DriftCount.count))
             .where(DriftCount.version_id == version_id, DriftCount.bucket >= since, DriftCount.bucket < until)
             .group_by(DriftCount.output, DriftCount.feature, DriftCount.bin))
    found: dict[tuple[bool, str], dict[int, int]] = {}
    for output, feature, bin_, n in session.execute(query):
        found.setdefault((bool(output), feature), {})[int(bin_)] = int(n)
    return found


def feature_drift(feature: str, entry: Mapping[str, Any], live: Mapping[int, int], min_samples: int) -> dict[str, Any]:
    """One feature's drift from its profile ``entry`` and the window's bin counts ``live``."""
    labels, reference = _reference_bins(entry)
    missing = live.get(MISSING_BIN, 0)
    observed = [live.get(i, 0) for i in range(len(labels))]
    present = sum(observed)
    samples = present + missing
    live_missing = missing / samples if samples else None
    result: dict[str, Any] = {
        "feature": feature, "kind": entry["kind"], "samples": samples,
        "missing": {"reference": entry["missing"], "live": live_missing,
                    "change": None if live_missing is None else live_missing - entry["missing"]},
    }
    ref_total = sum(reference)
    ref_shares = [n / ref_total for n in reference] if ref_total else [0.0] * len(reference)
    live_shares = [n / present for n in observed] if present else [0.0] * len(observed)
    result["bins"] = [{"bin": label, "reference": r, "live": q} for label, r, q in zip(labels, ref_shares, live_shares)]
    if not ref_total:
        return {**result, "psi": None, "js_distance": None, "verdict": "insufficient",
                "reason": "the reference has no values of this feature"}
    if present < min_samples:
        return {**result, "psi": None, "js_distance": None, "verdict": "insufficient",
                "reason": f"{present} values in the window; a verdict needs {min_samples} ([observe] min_samples)"}
    score = psi(ref_shares, live_shares)
    return {**result, "psi": score, "js_distance": js_distance(ref_shares, live_shares), "verdict": verdict(score)}


def _reference_bins(entry: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """The labels and reference counts of a profile's bins, in bin order (the order serving counts in)."""
    if entry["kind"] == STRING:
        categories = sorted(entry["counts"])
        return categories + [OTHER], [entry["counts"][c] for c in categories] + [entry[OTHER]]
    edges = entry["edges"]
    if not edges:
        return [], []
    inner = max(1, len(edges) - 1)
    labels = [f"< {edges[0]:g}"]
    if len(edges) == 1:
        labels.append(f"= {edges[0]:g}")
    else:
        labels += [f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i + 1 == inner else ')'}" for i in range(inner)]
    labels.append(f"> {edges[-1]:g}")
    return labels, list(entry["counts"])


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """The population stability index of two share vectors (zero shares taken as EPSILON)."""
    total = 0.0
    for p, q in zip(reference, live):
        p, q = max(p, EPSILON), max(q, EPSILON)
        total += (q - p) * math.log(q / p)
    return total


def js_distance(reference: Sequence[float], live: Sequence[float]) -> float:
    """The Jensen-Shannon distance (base 2, in [0, 1]) of two share vectors."""
    divergence = 0.0
    for p, q in zip(reference, live):
        m = (p + q) / 2
        if p > 0:
            divergence += p * math.log2(p / m) / 2
        if q > 0:
            divergence += q * math.log2(q / m) / 2
    return math.sqrt(max(divergence, 0.0))


def verdict(score: float) -> str:
    return "none" if score < MODERATE else "moderate" if score < SIGNIFICANT else "significant"
