"""The lists at 1,000 and at 100,000 rows: a page of models (first, last by number, last by
cursor, filtered by name substring and by tag), of one model's versions and of its events.

For each size and backend (SQLite; PostgreSQL too when reachable), a registry is filled straight
through the tables (N models, one model with N versions and N events), a server is started on it
(one granian worker) and every request is timed on one kept-alive connection from this process:
the median of --repeat requests, after two unmeasured ones. Printed as a table with the ratio of
the largest size to the smallest (1.0 = flat).

    .venv/bin/python bench/lists.py                  # 1,000 and 100,000 rows (make bench runs it)
    .venv/bin/python bench/lists.py --quick          # 1,000 and 10,000 rows, a smoke test
    .venv/bin/python bench/lists.py --sizes 1000 20000 --backends sqlite
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import PYTHON, free_port, modelyard_env, server  # noqa: E402

PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DATABASE = "modelyard_bench_lists"
BATCH = 5000


def fill(url: str, n: int) -> None:
    """N models (tagged team t0..t49), and model 'big' with N versions and N events."""
    from sqlalchemy import insert, select

    from modelyard.registry.db import make_engine, upgrade_to_head
    from modelyard.registry.models import Event, Model, ModelTag, ModelVersion

    engine = make_engine(url)
    upgrade_to_head(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for start in range(0, n, BATCH):
            rows = range(start, min(n, start + BATCH))
            conn.execute(insert(Model), [{"name": f"model-{i:07d}", "description": "", "tags": {"team": f"t{i % 50}"},
                                          "last_version": 0, "created_at": now, "updated_at": now} for i in rows])
        ids = dict(conn.execute(select(Model.name, Model.id)).all())
        for start in range(0, n, BATCH):
            conn.execute(insert(ModelTag), [{"model_id": ids[f"model-{i:07d}"], "key": "team", "value": f"t{i % 50}"}
                                            for i in range(start, min(n, start + BATCH))])
        big = conn.execute(insert(Model).values(name="big", description="", tags={}, last_version=n, created_at=now,
                                                updated_at=now).returning(Model.id)).scalar_one()
        version = {"model_id": big, "sha256": "0" * 64, "size_bytes": 1, "format": "pickle", "estimator": "bench.Fake",
                   "n_features": 4, "feature_names": [], "feature_aliases": {}, "classes": None, "labels": None,
                   "has_proba": False, "input_kind": "array", "feature_types": None, "library_versions": {},
                   "example": None, "load_warnings": [], "allow_nan": False, "description": "", "metrics": {},
                   "params": {}, "tags": {}, "created_at": now, "created_by": "bench"}
        event = {"model_name": "big", "alias": None, "action": "version.created", "actor": "bench", "at": now,
                 "before": None, "after": None}
        for start in range(0, n, BATCH):
            numbers = range(start + 1, min(n, start + BATCH) + 1)
            conn.execute(insert(ModelVersion), [{**version, "version": v} for v in numbers])
            conn.execute(insert(Event), [{**event, "version": v} for v in numbers])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does to a registry that has lived
    engine.dispose()


def pg_database() -> str | None:
    """A fresh bench database on the machine's PostgreSQL, or None when there is none."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DATABASE}")
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL to measure
        print(f"  PostgreSQL skipped: {exc}", flush=True)
        return None
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{DATABASE}"


def cursor(kind: str, key: str | int) -> str:
    from modelyard.web.paging import encode_cursor

    return encode_cursor(kind, key)


def requests(n: int, page_size: int) -> dict[str, str]:
    """What is timed; the deep pages are the list's last, by number and by the cursor before it."""
    last_models = -(-(n + 2) // page_size)  # + big and iris
    last_versions = -(-n // page_size)
    tail = (last_versions - 1) * page_size  # versions/events before the last page
    key = n - tail + 1  # the last page of versions and of events starts below this one
    return {
        "models, page 1": f"/models?page_size={page_size}",
        "models, last page by number": f"/models?page_size={page_size}&page={last_models}",
        "models, last page by cursor": f"/models?page_size={page_size}&cursor={cursor('models', f'model-{n - 9:07d}')}",
        "models, name substring": f"/models?page_size={page_size}&q=99",
        "models, tag": f"/models?page_size={page_size}&tag=team:t7",
        "versions, page 1": f"/models/big/versions?page_size={page_size}",
        "versions, last page by number": f"/models/big/versions?page_size={page_size}&page={last_versions}",
        "versions, last page by cursor": f"/models/big/versions?page_size={page_size}&cursor={cursor('versions', key)}",
        "events, page 1": f"/models/big/events?page_size={page_size}",
        "events, last page by number": f"/models/big/events?page_size={page_size}&page={last_versions}",
        "events, last page by cursor": f"/models/big/events?page_size={page_size}&cursor={cursor('events', key)}",
    }


def time_requests(port: int, token: str, paths: dict[str, str], repeat: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    timings: dict[str, float] = {}
    for label, path in paths.items():
        runs = []
        for i in range(repeat + 2):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or not json.loads(body):
                raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
            if i >= 2:
                runs.append(elapsed * 1000)
        timings[label] = statistics.median(runs)
    conn.close()
    return timings


def measure(backend: str, n: int, work: Path, args: argparse.Namespace) -> dict[str, float] | None:
    folder = work / f"{backend}-{n}"
    folder.mkdir()
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'registry.db'}"
    else:
        found = pg_database()
        if found is None:
            return None
        url = found
    started = time.perf_counter()
    fill(url, n)
    print(f"  {backend}, {n:,} rows: filled in {time.perf_counter() - started:.1f} s", flush=True)
    port = free_port()
    env = modelyard_env(folder, MODELYARD_SERVER_PORT=str(port), MODELYARD_SERVER_WORKERS="1",
                        MODELYARD_SERVER_ENGINE="granian")
    env["MODELYARD_DATABASE_URL"] = url
    with server([PYTHON, "-m", "modelyard.cli", "serve"], env, port, folder / "server.log"):
        token = (folder / "admin.token").read_text().strip()
        return time_requests(port, token, requests(n, args.page_size), args.repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 rows, 10 requests each")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat = [1000, 10_000], 10
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-lists-") as tmp:
        for backend in args.backends:
            for n in args.sizes:
                timings = measure(backend, n, Path(tmp), args)
                if timings is not None:
                    results.setdefault(backend, {})[n] = timings
    for backend, by_size in results.items():
        sizes = sorted(by_size)
        print(f"\n{backend}: median ms per page of {args.page_size}")
        print(f"  {'':34}" + "".join(f"{n:>12,}" for n in sizes) + f"{'ratio':>8}")
        for label in by_size[sizes[0]]:
            values = [by_size[n][label] for n in sizes]
            print(f"  {label:34}" + "".join(f"{v:>12.2f}" for v in values) + f"{values[-1] / values[0]:>8.2f}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "lists.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
