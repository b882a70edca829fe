"""One run, all the figures: modelyard against the tutorial's app and constant-JSON floors.

Servers, each on a loopback port with modelyard's [server] workers and threads (and the
plain-WSGI floor and modelyard again with --threaded threads per worker, 4: the setting for
mixed traffic; the batching server has those too): the tutorial and a
Flask constant-JSON floor on gunicorn gthread; the same Flask floor on gunicorn sync (2 workers,
the stack the tutorial is usually run on) and under granian; a plain-WSGI constant-JSON floor
under granian (the fastest a Python answer gets on this machine); modelyard on granian (its
default engine, micro-batching off and on) and on gunicorn. wrk drives each with the same
connections and duration. Printed: req/s, p50, p99, and the ratios (from each target's best
round, and again from its median round; p99s as the median over rounds); then 100-row batches
(rows/s), the Open Inference Protocol's /v2 infer and MLflow's /invocations beside the native
route (single rows), Seldon MLServer 1.7's scikit-learn runtime with the same model (single rows
and 100-row batches in the Open Inference Protocol; bench/mlserver.py), a 1,000-row batch against
the bare in-process predict, the memory (PSS) of each engine's processes, the cold load of a
version, uploads (each worker's first, later ones, and a ~48 MB forest in MB/s), and 1,000 models
hit round-robin through a cache bounded to 100.

    .venv/bin/python bench/run.py            # needs wrk (apt-get install wrk)
    .venv/bin/python bench/run.py --quick    # shorter runs, for a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pickle
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))

from bench import mlserver  # noqa: E402

RECORD = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
TUTORIAL_RECORD = {"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str = "/predict", body: bytes | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = post(port, path, body or json.dumps(RECORD).encode())
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not come up")


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def server(argv: list[str], env: dict[str, str], port: int, log: Path, ready_path: str = "/predict",
           ready_body: bytes | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
    try:
        wait_ready(port, ready_path, ready_body)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def gunicorn(app: str, port: int, workers: int, threads: int) -> list[str]:
    return [PYTHON, "-m", "gunicorn", "-w", str(workers), "-k", "gthread", "--threads", str(threads),
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", app]


def gunicorn_sync(app: str, port: int, workers: int) -> list[str]:
    return [PYTHON, "-m", "gunicorn", "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", app]


def granian(app: str, port: int, workers: int, threads: int) -> list[str]:
    return [PYTHON, "-m", "granian", "--interface", "wsgi", "--workers", str(workers), "--blocking-threads",
            str(threads), "--host", "127.0.0.1", "--port", str(port), "--no-ws", "--log-level", "warning", app]


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process and its descendants: shared pages count once in all."""
    total = 0
    for proc in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{proc}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wrk(port: int, path: str, body: bytes, seconds: int, connections: int, name: str, work: Path,
        lua: str | None = None) -> Result:
    script = work / (re.sub(r"\W+", "-", name) + ".lua")
    script.write_text(lua or (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    ))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    return parse_wrk(name, out)


def parse_wrk(name: str, out: str) -> Result:
    if "Requests/sec" not in out or "50%" not in out:
        raise RuntimeError(f"wrk printed no figures for {name}:\n{out}")

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    try:
        p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    except AttributeError:
        raise RuntimeError(f"cannot read wrk's output for {name}:\n{out}") from None
    p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Result(name, rps, p50, p99, non_2xx, errors)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (127.0.0.1:5432, user postgres), dropped after."""
    import psycopg

    admin = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"modelyard_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def modelyard_env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(
        MODELYARD_DATABASE_URL=f"sqlite:///{work / 'registry.db'}",
        MODELYARD_ARTIFACTS_ROOT=str(work / "artifacts"), MODELYARD_CACHE_MAPPED_ROOT=str(work / "mapped"),
        MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(work / "admin.token"),
        MODELYARD_LOGGING_LEVEL="WARNING",
    )
    env.update(extra)  # may name another database
    return env


def rss_bytes(pid: int) -> int:
    """Resident memory of a process group's leader and its children (gunicorn master + workers)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
        own = int(status.parent.name)
        if own == pid or ppid == pid:
            match = re.search(r"VmRSS:\s+(\d+) kB", text)
            total += int(match.group(1)) * 1024 if match else 0
    return total


def upload(port: int, token: str, name: str, data: bytes, **fields: str) -> None:
    boundary = "modelyardbench"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                    for key, value in fields.items())
    body = (f"{parts}--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pkl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", f"/models/{name}/versions", body=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"upload of {name} failed: {response.status}")


def api(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    """One JSON call of the registry API with a token."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {raw[:200]!r}")
    return json.loads(raw) if raw else None


def rollout(port: int, token: str) -> None:
    """On the serving under test: iris version 2 (the same model again), alias ``canary`` split
    50/50 between 1 and 2, alias ``guarded`` the same split guarded (error_rate: every request
    version 2 serves is counted for its guard), and alias ``shadowed`` on 1 with version 2
    shadowing every request."""
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    iris = load_iris()
    seeded = api(port, token, "GET", "/models/iris/versions/1")  # the same features, aliases and labels
    upload(port, token, "iris", pickle.dumps(SVC(kernel="linear").fit(iris.data, iris.target)),
           features=json.dumps(seeded["feature_names"]), feature_aliases=json.dumps(seeded["feature_aliases"]),
           labels=json.dumps(seeded["labels"]))
    api(port, token, "PUT", "/models/iris/aliases/canary", {"weights": {"1": 50, "2": 50}})
    api(port, token, "PUT", "/models/iris/aliases/guarded", {"version": 1})
    api(port, token, "PUT", "/models/iris/aliases/guarded", {"weights": {"1": 50, "2": 50}, "guard": {
        "metric": "error_rate", "max": 0.05, "window_seconds": 300, "min_samples": 200}})
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    names = json.dumps(seeded["feature_names"])  # explanations (issue 26): a linear model with its reference, a tree
    upload(port, token, "explained", pickle.dumps(LogisticRegression(max_iter=1000).fit(iris.data, iris.target)),
           features=names, reference=json.dumps(iris.data.tolist()))
    upload(port, token, "explained-tree",
           pickle.dumps(DecisionTreeClassifier(max_depth=4, random_state=0).fit(iris.data, iris.target)),
           features=names)
    api(port, token, "PUT", "/models/iris/aliases/shadowed", {"version": 1})
    api(port, token, "PUT", "/models/iris/aliases/shadowed/shadow", {"version": 2, "fraction": 1.0})


@contextmanager
def serve_mlserver(work: Path, venv: Path, ports: dict[str, int], ready_body: bytes) -> Iterator[None]:
    """MLServer serving the same Iris SVC as modelyard's seed, up once its model answers (its
    HTTP server answers 404 for the model until the inference worker has loaded it)."""
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    iris = load_iris()
    root = mlserver.serve_dir(work, SVC(kernel="linear").fit(iris.data, iris.target), ports["mlserver"],
                              ports["mlserver-grpc"], ports["mlserver-metrics"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    with server(mlserver.argv(root, venv), env, ports["mlserver"], work / "mlserver.log", mlserver.PATH, ready_body):
        deadline = time.monotonic() + 90
        while post(ports["mlserver"], mlserver.PATH, ready_body)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"MLServer did not load its model: see {work / 'mlserver.log'}")
            time.sleep(0.2)
        yield


def wrk_latency_ms(port: int, path: str, body: bytes, seconds: int, name: str, work: Path) -> float:
    """p50 of requests sent one at a time on one connection (wrk -c1: the client costs next to
    nothing, unlike a Python client that would add its own parsing to every request)."""
    script = work / (re.sub(r"\W+", "-", name) + ".lua")
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    return parse_wrk(name, out).p50_ms


def batch_sizes(port: int, token: str) -> dict[str, float]:
    """Requests and rows per batched predict call, from the server's /metrics (a token: /metrics
    is a private read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    text = conn.getresponse().read().decode()
    conn.close()

    def value(name: str) -> float:
        match = re.search(rf"^{name} ([\d.e+]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    calls = value("modelyard_batch_requests_count")
    return {"calls": calls,
            "requests_per_call": value("modelyard_batch_requests_sum") / calls if calls else 0.0,
            "rows_per_call": value("modelyard_batch_rows_sum") / calls if calls else 0.0}


def sequential_latency_ms(port: int, path: str, body: bytes, n: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return statistics.median(times)


def in_process_ms(body: bytes, n: int) -> float:
    """The bare cost of the same work without HTTP: decode, array, SVC.predict, encode."""
    import numpy as np
    import orjson
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    iris = load_iris()
    clf = SVC(kernel="linear").fit(iris.data, iris.target)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        rows = orjson.loads(body)["inputs"]
        predictions = clf.predict(np.array(rows, dtype=np.float64)).tolist()
        orjson.dumps({"predictions": predictions})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _default_threads() -> int:
    from modelyard.config import load_config

    return load_config().server.threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each measured run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=_default_threads(),
                        help="threads per worker for every server (default: modelyard's [server] threads)")
    parser.add_argument("--threaded", type=int, default=4,
                        help="threads per worker of the second plain-WSGI floor and modelyard pair, and of the "
                             "batching server (micro-batching needs concurrent requests in a worker)")
    parser.add_argument("--models", type=int, default=1000, help="models for the round-robin run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--quick", action="store_true", help="one round of 3 s runs, 100 models")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.models, args.rounds = 3, 2, 100, 1
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    started = time.time()
    single = json.dumps(RECORD).encode()
    tutorial_body = json.dumps(TUTORIAL_RECORD).encode()
    rows100 = json.dumps({"inputs": [list(RECORD.values())] * 100}).encode()
    rows1000 = json.dumps({"inputs": [list(RECORD.values())] * 1000}).encode()
    v2_body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                      "data": list(RECORD.values())}]}).encode()
    mlflow_body = json.dumps({"dataframe_records": [RECORD]}).encode()
    v2_rows100 = json.dumps({"inputs": [{"name": "input", "shape": [100, 4], "datatype": "FP64",
                                         "data": list(RECORD.values()) * 100}]}).encode()
    mlserver_single = mlserver.body([list(RECORD.values())])
    mlserver_rows100 = mlserver.body([list(RECORD.values())] * 100)
    mlserver_venv = mlserver.venv()
    results: dict[str, Any] = {"settings": {"workers": args.workers, "threads": args.threads,
                                            "threaded": args.threaded,
                                            "connections": args.connections, "seconds": args.seconds}}
    table: list[Result] = []

    def measure(name: str, port: int, path: str, body: bytes) -> Result:
        wrk(port, path, body, args.warmup, args.connections, f"{name}-warmup", work)
        result = wrk(port, path, body, args.seconds, args.connections, name, work)
        print(f"  {name:<40} {result.requests_per_s:>9.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
              f"p99 {result.p99_ms:6.2f} ms  non-2xx {result.non_2xx}  errors {result.errors}", flush=True)
        return result

    # Every server runs at once (idle while another is measured) and the measurements are
    # interleaved over several rounds; the best round of each is reported. On this machine any
    # server, ours or the references, now and then runs at a third of its speed for a whole
    # measurement (idle CPU, p50 ~4x): the best round is the least disturbed one, and taking it
    # for every target keeps the ratios like for like. All rounds are kept in the JSON.
    ports = {name: free_port() for name in ("floor", "floor-sync", "floor-granian", "wsgi-granian", "tutorial",
                                             "wsgi-threaded", "threaded", "off", "on", "gunicorn", "quiet", "pg",
                                             "mlserver", "mlserver-grpc", "mlserver-metrics")}
    targets = [
        ("floor (constant JSON)", "floor", "/predict", single),
        ("floor, gunicorn sync x2", "floor-sync", "/predict", single),
        ("floor, granian", "floor-granian", "/predict", single),
        ("plain WSGI floor, granian", "wsgi-granian", "/predict", single),
        (f"plain WSGI floor, granian, {args.threaded} threads", "wsgi-threaded", "/predict", single),
        ("tutorial app (pandas per request)", "tutorial", "/predict", tutorial_body),
        ("tutorial app, DataFrame to predict", "tutorial", "/predict-dataframe", tutorial_body),
        ("modelyard /predict, batching off", "off", "/predict", tutorial_body),
        ("modelyard /predict, batching on", "on", "/predict", tutorial_body),
        (f"modelyard /predict, {args.threaded} threads", "threaded", "/predict", tutorial_body),
        ("modelyard /predict, gunicorn", "gunicorn", "/predict", tutorial_body),
        ("modelyard /models/iris/1, batching off", "off", "/models/iris/1/predict", single),
        ("modelyard /models/iris/1, observing off", "quiet", "/models/iris/1/predict", single),
        ("modelyard /models/iris/1, PostgreSQL", "pg", "/models/iris/1/predict", single),
        ("modelyard /v2 infer, batching off", "off", "/v2/models/iris/infer", v2_body),
        ("modelyard /invocations, batching off", "off", "/invocations", mlflow_body),
        ("modelyard weighted alias 50/50, batching off", "off", "/models/iris/canary/predict", single),
        ("modelyard guarded canary 50/50, batching off", "off", "/models/iris/guarded/predict", single),
        ("modelyard with a 100% shadow, batching off", "off", "/models/iris/shadowed/predict", single),
        ("modelyard logistic regression, batching off", "off", "/models/explained/1/predict", single),
        ("modelyard logistic regression, observing off", "quiet", "/models/explained/1/predict", single),
        ("modelyard logistic regression explained", "off", "/models/explained/1/predict?explain=true", single),
        ("modelyard tree (depth 4) explained", "off", "/models/explained-tree/1/predict?explain=true", single),
        ("modelyard 100-row batches, batching off", "off", "/models/iris/production/predict", rows100),
        ("modelyard 100-row batches, batching on", "on", "/models/iris/production/predict", rows100),
        ("modelyard 100-row batches, /v2 infer", "off", "/v2/models/iris/infer", v2_rows100),
        ("MLServer 1.7 sklearn, single row (/v2)", "mlserver", mlserver.PATH, mlserver_single),
        ("MLServer 1.7 sklearn, 100-row batches (/v2)", "mlserver", mlserver.PATH, mlserver_rows100),
    ]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with contextlib.ExitStack() as stack:
        references = {
            "floor": gunicorn("bench.floor_app:app", ports["floor"], args.workers, args.threads),
            "floor-sync": gunicorn_sync("bench.floor_app:app", ports["floor-sync"], 2),
            "floor-granian": granian("bench.floor_app:app", ports["floor-granian"], args.workers, args.threads),
            "wsgi-granian": granian("bench.floor_app:wsgi", ports["wsgi-granian"], args.workers, args.threads),
            "wsgi-threaded": granian("bench.floor_app:wsgi", ports["wsgi-threaded"], args.workers, args.threaded),
        }
        for key, argv in references.items():
            stack.enter_context(server(argv, os.environ.copy(), ports[key], work / f"{key}.log"))
        stack.enter_context(serve_mlserver(work, mlserver_venv, ports, mlserver_single))
        stack.enter_context(server(gunicorn("bench.tutorial_app:app", ports["tutorial"], args.workers, args.threads),
                                   os.environ.copy(), ports["tutorial"], work / "tutorial.log",
                                   ready_body=tutorial_body))
        # "quiet": the prediction log and the drift counts off (issue 26), against the default
        # (1% of requests logged, every request to a version with a reference counted).
        # "pg": the same server on PostgreSQL (a database of its own on the machine's server): every
        # request reads the registry generation there (issue 27: at most 20% of a single row).
        database = stack.enter_context(postgres_database())

        def threads_of(key: str) -> int:
            return args.threaded if key in ("on", "threaded") else args.threads

        for key, engine, batching in (("off", "granian", ""), ("on", "granian", "iris"), ("gunicorn", "gunicorn", ""),
                                      ("quiet", "granian", ""), ("pg", "granian", ""), ("threaded", "granian", "")):
            quiet = {"MODELYARD_OBSERVE_SAMPLE_RATE": "0", "MODELYARD_OBSERVE_COUNT_BINS": "false"} \
                if key == "quiet" else {"MODELYARD_DATABASE_URL": database} if key == "pg" else {}
            env = modelyard_env(work / f"modelyard-{key}", MODELYARD_SERVER_PORT=str(ports[key]),
                                MODELYARD_SERVER_WORKERS=str(args.workers),
                                MODELYARD_SERVER_THREADS=str(threads_of(key)),
                                MODELYARD_SERVER_ENGINE=engine, MODELYARD_BATCHING_MODELS=batching, **quiet)
            processes[key] = stack.enter_context(server([PYTHON, "-m", "modelyard.cli", "serve"], env, ports[key],
                                                        work / f"modelyard-{key}.log"))
        for key in ("off", "quiet"):
            rollout(ports[key], (work / f"modelyard-{key}" / "admin.token").read_text().strip())
        rounds: dict[str, list[Result]] = {name: [] for name, *_ in targets}
        http_runs: list[float] = []
        bare_runs: list[float] = []
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds}", flush=True)
            for name, key, path, body in targets:
                rounds[name].append(measure(name, ports[key], path, body))
            http_runs.append(wrk_latency_ms(ports["off"], "/models/iris/1/predict", rows1000, args.seconds,
                                            "rows1000", work))
            bare_runs.append(in_process_ms(rows1000, 300))
            print(f"  {'1,000-row batch, one at a time':<40} p50 {http_runs[-1]:6.2f} ms over HTTP, "
                  f"{bare_runs[-1]:.2f} ms in process", flush=True)
        http_ms, bare_ms = min(http_runs), min(bare_runs)
        results["batching"] = batch_sizes(ports["on"], (work / "modelyard-on" / "admin.token").read_text().strip())
        results["shadow_report"] = api(ports["off"], (work / "modelyard-off" / "admin.token").read_text().strip(),
                                       "GET", "/models/iris/aliases/shadowed/shadow")
        results["guard_status"] = api(ports["off"], (work / "modelyard-off" / "admin.token").read_text().strip(),
                                      "GET", "/models/iris/aliases/guarded/guard")
        # After the load: master and workers, each worker having served (and loaded) the model.
        results["pss_bytes"] = {engine: pss_bytes(processes[key].pid)
                                for key, engine in (("off", "granian"), ("gunicorn", "gunicorn"))}
    best = {name: max(runs, key=lambda r: r.requests_per_s) for name, runs in rounds.items()}
    # The round of median throughput too: what a typical round gives, next to the least disturbed.
    typical = {name: sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2] for name, runs in rounds.items()}
    results["rounds"] = {name: [asdict(r) for r in runs] for name, runs in rounds.items()}
    table.extend(best.values())
    # A tail is noisier than a rate, and the round with the best rate need not have the best
    # tail: the p99 ratio compares each target's median p99 over all rounds.
    p99 = {name: statistics.median(r.p99_ms for r in runs) for name, runs in rounds.items()}
    for label, chosen in (("", best), ("median_round_", typical)):
        rate = {name: result.requests_per_s for name, result in chosen.items()}
        ours = rate["modelyard /predict, batching off"]
        results[f"{label}ratios_engines"] = {
            "modelyard_over_flask_floor_gunicorn_sync": ours / rate["floor, gunicorn sync x2"],
            "modelyard_over_plain_wsgi_floor_granian": ours / rate["plain WSGI floor, granian"],
            "modelyard_over_flask_floor_granian": ours / rate["floor, granian"],
            "modelyard_over_plain_wsgi_floor_granian_threaded": (
                rate[f"modelyard /predict, {args.threaded} threads"]
                / rate[f"plain WSGI floor, granian, {args.threaded} threads"]),
            "modelyard_over_plain_wsgi_floor_granian_best_setting": ours / max(
                rate["plain WSGI floor, granian"], rate[f"plain WSGI floor, granian, {args.threaded} threads"]),
            "p99_over_flask_floor_granian_p99": p99["modelyard /predict, batching off"] / p99["floor, granian"],
            "modelyard_gunicorn_over_floor_gthread": (rate["modelyard /predict, gunicorn"]
                                                      / rate["floor (constant JSON)"]),
        }
        floor, tutorial = chosen["floor (constant JSON)"], chosen["tutorial app (pandas per request)"]
        for batching in ("off", "on"):
            name = f"modelyard /predict, batching {batching}"
            results[f"{label}ratios_batching_{batching}"] = {
                "modelyard_over_tutorial": chosen[name].requests_per_s / tutorial.requests_per_s,
                "modelyard_over_tutorial_dataframe": (
                    chosen[name].requests_per_s / chosen["tutorial app, DataFrame to predict"].requests_per_s),
                "modelyard_over_floor": chosen[name].requests_per_s / floor.requests_per_s,
                "p99_over_floor_p99": p99[name] / p99["floor (constant JSON)"],
            }
    # The protocols against the native route, single rows, same server (issue 17: within 15%).
    rate = {name: result.requests_per_s for name, result in best.items()}
    native_rate = rate["modelyard /predict, batching off"]
    results["ratios_protocols"] = {
        "v2_infer_over_native": rate["modelyard /v2 infer, batching off"] / native_rate,
        "invocations_over_native": rate["modelyard /invocations, batching off"] / native_rate,
    }
    # Safe rollout's cost (issue 25): the same single row through a split alias and through an
    # alias whose every request is also run on its shadow, against a plain version ref.
    plain_rate = rate["modelyard /models/iris/1, batching off"]
    results["ratios_rollout"] = {
        "weighted_alias_over_plain_ref": rate["modelyard weighted alias 50/50, batching off"] / plain_rate,
        "guarded_canary_over_plain_ref": rate["modelyard guarded canary 50/50, batching off"] / plain_rate,
        "shadow_100_percent_over_plain_ref": rate["modelyard with a 100% shadow, batching off"] / plain_rate,
    }
    # Observing's cost (issue 26): the default (1% of requests logged; every request to a version
    # uploaded with a reference counted into its bins) against a server with both off.
    # The registry on PostgreSQL (issue 27): the per-request generation read is a round trip to it.
    results["ratios_database"] = {
        "postgresql_over_sqlite": rate["modelyard /models/iris/1, PostgreSQL"] / plain_rate,
    }
    results["ratios_observe"] = {
        "sampled_1pct_over_off": plain_rate / rate["modelyard /models/iris/1, observing off"],
        "sampled_and_counted_over_off": (rate["modelyard logistic regression, batching off"]
                                         / rate["modelyard logistic regression, observing off"]),
    }
    # Explanations' cost (issue 26): the same single row with and without ?explain=true.
    results["ratios_explain"] = {
        "linear_explained_over_plain": (rate["modelyard logistic regression explained"]
                                        / rate["modelyard logistic regression, batching off"]),
        "tree_explained_over_plain_ref": rate["modelyard tree (depth 4) explained"] / plain_rate,
    }
    results["rows_per_s_100_row_batches"] = {
        batching: best[f"modelyard 100-row batches, batching {batching}"].requests_per_s * 100
        for batching in ("off", "on")}
    # Against MLServer (issue 27: 100-row batches >= 6x): the native route's batches, and the same
    # rows through modelyard's /v2, the protocol MLServer speaks.
    ml_single = rate["MLServer 1.7 sklearn, single row (/v2)"]
    ml_rows = rate["MLServer 1.7 sklearn, 100-row batches (/v2)"] * 100
    results["ratios_mlserver"] = {
        "mlserver_rows_per_s_100_row_batches": ml_rows,
        "rows_100_native_over_mlserver": results["rows_per_s_100_row_batches"]["off"] / ml_rows,
        "rows_100_v2_over_mlserver": rate["modelyard 100-row batches, /v2 infer"] * 100 / ml_rows,
        "single_row_native_over_mlserver": native_rate / ml_single,
        "single_row_v2_over_mlserver": rate["modelyard /v2 infer, batching off"] / ml_single,
    }
    results["batch_1000_rows"] = {"http_p50_ms": http_ms, "in_process_ms": bare_ms, "ratio": http_ms / bare_ms,
                                  "rounds": {"http_p50_ms": http_runs, "in_process_ms": bare_runs}}
    print("\nbest of each:")
    for result in best.values():
        print(f"  {result.name:<40} {result.requests_per_s:>9.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
              f"p99 {result.p99_ms:6.2f} ms")

    results["cold_load"] = cold_load(work, args)
    results["uploads"] = uploads(work, args)
    results["round_robin"] = round_robin(work, args, table)
    results["table"] = [asdict(r) for r in table]

    print()
    for key in ("ratios_batching_off", "ratios_batching_on",
                "median_round_ratios_batching_off", "median_round_ratios_batching_on"):
        r = results[key]
        print(f"{key}: modelyard/tutorial {r['modelyard_over_tutorial']:.2f}x (DataFrame reading "
              f"{r['modelyard_over_tutorial_dataframe']:.2f}x), modelyard/floor "
              f"{r['modelyard_over_floor']:.2f}x, p99 modelyard/floor {r['p99_over_floor_p99']:.2f}x")
    for key in ("ratios_engines", "median_round_ratios_engines"):
        r = results[key]
        print(f"{key}: modelyard/Flask floor on gunicorn sync {r['modelyard_over_flask_floor_gunicorn_sync']:.2f}x, "
              f"modelyard/plain-WSGI floor on granian {r['modelyard_over_plain_wsgi_floor_granian']:.2f}x "
              f"({args.threads} thread(s) each; {r['modelyard_over_plain_wsgi_floor_granian_threaded']:.2f}x with "
              f"{args.threaded} each; {r['modelyard_over_plain_wsgi_floor_granian_best_setting']:.2f}x of the floor "
              "at its better setting), "
              f"modelyard/Flask floor on granian {r['modelyard_over_flask_floor_granian']:.2f}x, "
              f"p99 modelyard/Flask floor on granian {r['p99_over_flask_floor_granian_p99']:.2f}x, "
              f"modelyard on gunicorn/floor on gunicorn {r['modelyard_gunicorn_over_floor_gthread']:.2f}x")
    r = results["ratios_protocols"]
    print(f"protocols, single row, against POST /predict: /v2 infer {r['v2_infer_over_native']:.2f}x, "
          f"/invocations {r['invocations_over_native']:.2f}x")
    r, shadow = results["ratios_rollout"], results["shadow_report"]
    print(f"rollout, single row, against /models/iris/1: "
          f"weighted alias 50/50 {r['weighted_alias_over_plain_ref']:.2f}x, "
          f"guarded canary 50/50 {r['guarded_canary_over_plain_ref']:.2f}x "
          f"(guard: {results['guard_status']['candidates']['2']['requests']:,} counted in its window, "
          f"{results['guard_status']['verdict']}), "
          f"100% shadow {r['shadow_100_percent_over_plain_ref']:.2f}x (shadow runs: {shadow['requests']:,} sampled, "
          f"{shadow['compared']:,} compared, {shadow['dropped']:,} dropped, agreement {shadow['agreement']}, "
          f"p50 primary {shadow['latency_ms']['primary']['p50']} ms / "
          f"shadow {shadow['latency_ms']['shadow']['p50']} ms)")
    ratio = results["ratios_database"]["postgresql_over_sqlite"]
    print(f"registry on PostgreSQL, single row against SQLite: {ratio:.2f}x")
    r = results["ratios_observe"]
    print(f"observing (log 1%, drift counts) against off, single row: {r['sampled_1pct_over_off']:.2f}x (no "
          f"reference), {r['sampled_and_counted_over_off']:.2f}x (a version with a reference: every row counted)")
    r = results["ratios_explain"]
    print(f"explanations, single row: a logistic regression explained {r['linear_explained_over_plain']:.2f}x of "
          f"it unexplained, a depth-4 tree explained {r['tree_explained_over_plain_ref']:.2f}x of /models/iris/1")
    pss = results["pss_bytes"]
    print(f"memory (PSS, master + workers): granian {pss['granian'] / 2**20:.0f} MiB, "
          f"gunicorn {pss['gunicorn'] / 2**20:.0f} MiB")
    bs = results["batching"]
    print(f"micro-batching: {bs['calls']:,.0f} batched calls, {bs['requests_per_call']:.2f} requests per call")
    rows = results["rows_per_s_100_row_batches"]
    print(f"100-row batches: {rows['off']:,.0f} rows/s batching off, {rows['on']:,.0f} rows/s batching on")
    r = results["ratios_mlserver"]
    print(f"against MLServer {mlserver.VERSION} (sklearn runtime, same model): 100-row batches "
          f"{r['rows_100_native_over_mlserver']:.2f}x (native), {r['rows_100_v2_over_mlserver']:.2f}x (/v2; "
          f"MLServer {r['mlserver_rows_per_s_100_row_batches']:,.0f} rows/s), single row "
          f"{r['single_row_native_over_mlserver']:.2f}x (native), {r['single_row_v2_over_mlserver']:.2f}x (/v2)")
    b = results["batch_1000_rows"]
    print(f"1,000-row batch: HTTP p50 {b['http_p50_ms']:.2f} ms (wrk -c1) vs in-process {b['in_process_ms']:.2f} ms "
          f"({b['ratio']:.2f}x)")
    c = results["cold_load"]
    print(f"cold load of a {c['estimator']} ({c['size_bytes']:,} bytes): first request {c['first_ms']:.1f} ms, "
          f"then {c['warm_ms']:.2f} ms")
    u = results["uploads"]
    print(f"uploads on a fresh server: first ones {', '.join(f'{ms:.0f}' for ms in u['first_ms'])} ms, "
          f"later {u['later_median_ms']:.0f} ms ({u['small_bytes']:,} bytes); a {u['large_bytes'] / 1e6:.0f} MB "
          f"forest in {min(u['large_s']):.2f} s, {u['large_mb_per_s']:.0f} MB/s")
    rr = results["round_robin"]
    print(f"{rr['models']} models round-robin, cache of {rr['cache_entries']}: {rr['requests_per_s']:.0f} req/s, "
          f"non-2xx {rr['non_2xx']}, errors {rr['errors']}, RSS at the end {rr['rss_bytes'] / 2**20:.0f} MiB")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out / 'latest.json'} ({time.time() - started:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def cold_load(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Time the first predict of a freshly uploaded version (load + verify + unpickle) and the next."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    model = RandomForestClassifier(n_estimators=200, random_state=0).fit(iris.data, iris.target)
    data = pickle.dumps(model)
    port = free_port()
    env = modelyard_env(work / "cold", MODELYARD_SERVER_PORT=str(port), MODELYARD_SERVER_WORKERS="1")
    with server([PYTHON, "-m", "modelyard.cli", "serve"], env, port, work / "cold.log"):
        token = (work / "cold" / "admin.token").read_text().strip()
        upload(port, token, "forest", data)
        body = json.dumps({"inputs": [list(RECORD.values())]}).encode()
        started = time.perf_counter()
        status, _ = post(port, "/models/forest/1/predict", body)
        first = (time.perf_counter() - started) * 1000
        warm = sequential_latency_ms(port, "/models/forest/1/predict", body, 50)
    return {"estimator": "RandomForestClassifier(200 trees)", "size_bytes": len(data), "first_ms": first,
            "warm_ms": warm, "status": status}


def uploads(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Uploads on a freshly started server: the first small ones (each worker's first: the trial
    sandbox is warm or it is not), the later ones, and a ~48 MB forest's throughput in MB/s."""
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    small = pickle.dumps(LogisticRegression(max_iter=500).fit(iris.data, iris.target))
    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    large = pickle.dumps(ExtraTreesClassifier(n_estimators=20 if args.quick else 65, random_state=0).fit(X, y))
    port = free_port()
    env = modelyard_env(work / "uploads", MODELYARD_SERVER_PORT=str(port), MODELYARD_SERVER_WORKERS=str(args.workers),
                        MODELYARD_SERVER_THREADS=str(args.threads))

    def timed(name: str, data: bytes) -> float:
        started = time.perf_counter()
        upload(port, token, name, data)
        return time.perf_counter() - started

    with server([PYTHON, "-m", "modelyard.cli", "serve"], env, port, work / "uploads.log"):
        token = (work / "uploads" / "admin.token").read_text().strip()
        small_s = [timed("small", small) for _ in range(10)]
        large_s = [timed("large", large) for _ in range(3)]
    return {"small_bytes": len(small), "first_ms": [s * 1000 for s in small_s[:args.workers]],
            "later_median_ms": statistics.median(small_s[args.workers:]) * 1000, "large_bytes": len(large),
            "large_s": large_s, "large_mb_per_s": len(large) / min(large_s) / 1e6}


def round_robin(work: Path, args: argparse.Namespace, table: list[Result]) -> dict[str, Any]:
    """Many small models hit in turn through a bounded cache: evictions and reloads, no errors."""
    from sklearn.linear_model import LogisticRegression

    port = free_port()
    env = modelyard_env(work / "many", MODELYARD_SERVER_PORT=str(port), MODELYARD_CACHE_MAX_ENTRIES="100",
                        MODELYARD_SERVER_WORKERS=str(args.workers), MODELYARD_SERVER_THREADS=str(args.threads))
    with server([PYTHON, "-m", "modelyard.cli", "serve"], env, port, work / "many.log") as process:
        token = (work / "many" / "admin.token").read_text().strip()
        for i in range(args.models):
            model = LogisticRegression(max_iter=200).fit([[0, 0, 0, 0], [1, 1, 1, i + 1]], [0, 1])
            upload(port, token, f"m{i}", pickle.dumps(model))
        lua = (
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps({'inputs': [[1, 2, 3, 4]]}))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            "counter = 0\n"
            "request = function()\n"
            "  counter = counter + 1\n"
            f'  return wrk.format(nil, "/models/m" .. (counter % {args.models}) .. "/1/predict")\n'
            "end\n"
        )
        wrk(port, "/", b"", args.warmup, args.connections, "round-robin-warmup", work, lua)
        result = wrk(port, "/", b"", args.seconds, args.connections, "round-robin", work, lua)
        table.append(result)
        rss = rss_bytes(process.pid)
    return {"models": args.models, "cache_entries": 100, "requests_per_s": result.requests_per_s,
            "p99_ms": result.p99_ms, "non_2xx": result.non_2xx, "errors": result.errors, "rss_bytes": rss}


if __name__ == "__main__":
    sys.exit(main())
