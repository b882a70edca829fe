"""What each step of a single-row predict costs, in instructions (issue 27: "say what each step
costs before and after").

Timings on a shared 2-core machine move by 10-30% between runs; instruction counts do not. Each
step is measured as the instructions a request loses when that step is replaced by its result,
computed once beforehand: the app as `create_app` builds it (SQLite in a temporary directory, the
seeded Iris SVC), the tutorial's record on ``POST /predict`` called as granian calls the lane,
300 requests of warm-up, ``gc.freeze()`` as the server does, then ``--requests`` counted under
``valgrind --tool=callgrind`` (the main thread only: the background threads' timers run ~60x
more often per request under valgrind). Needs valgrind (Debian: ``apt-get install valgrind``);
about 40 s a step, two at a time.

    .venv/bin/python bench/steps.py [--requests 1000] [--steps decode,write]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
BODY = json.dumps({"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}).encode()
ANSWER = b'{"model":"iris","version":1,"predictions":[0],"labels":["setosa"],"target_value":0}'
# Each step, and what replacing it with its precomputed result leaves out. (Authorization is no
# step: for a request without a token, as here, the lane decides it once when it is built.)
STEPS = {
    "predict": "the estimator call (fast-path guard, libsvm, classes)",
    "decode": "decoding the record into an array",
    "read": "the protocol's read (read_rows, orjson, the options)",
    "write": "writing the answer (answer, orjson.dumps)",
    "entry": "the cache lookup (Predictor.entry, LRUCache.get)",
    "resolve": "resolving the ref (RefCache.resolve)",
    "body": "reading the body (read_body)",
    "offer": "the prediction log and drift hand-over (Observer.offer)",
    "metrics": "the request metrics (metrics.observe)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: " + ", ".join(STEPS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.requests)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench/steps.py needs valgrind: apt-get install valgrind")
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        sys.exit(f"unknown steps: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(2) as pool:
        counts = dict(zip(["", *steps], pool.map(lambda s: instructions(s, args.requests, Path(work)),
                                                 ["", *steps])))
    whole = counts[""]
    print(f"instructions a request, {args.requests} requests, POST /predict, the tutorial's record")
    print(f"  {'whole request, in process':<62} {whole:>9,}")
    for step in steps:
        print(f"  {STEPS[step]:<62} {whole - counts[step]:>9,}")
    print(f"  {'the rest (WSGI, lane, handler and service bodies, tuples)':<62} "
          f"{whole - sum(whole - counts[s] for s in steps):>9,}")


def instructions(step: str, requests: int, work: Path) -> int:
    """The main thread's instructions a request with ``step`` replaced ("" for none)."""
    name = step or "whole"
    out, go = work / f"{name}.callgrind", work / f"{name}.go"
    env = {**os.environ, "PYTHONHASHSEED": "0", "STEPS_GO": str(go)}
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out}", PYTHON, __file__, "--child", step, "--requests", str(requests)]
    with subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                break
        else:
            sys.exit(f"step {name}: the app did not start (rc {process.wait()})")
        subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True, capture_output=True)
        go.touch()
        status = process.stdout.read().strip()
        if process.wait() != 0 or status != "200 OK":
            sys.exit(f"step {name}: {status or 'no answer'} (rc {process.returncode})")
    main_thread = next(work.glob(f"{name}.callgrind*-01"))
    for line in main_thread.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) // requests
    sys.exit(f"step {name}: no totals in {main_thread}")


def child(step: str, requests: int) -> None:
    """Build the app, replace ``step``, warm up, wait for the count to start, run the requests."""
    import gc

    go = Path(os.environ["STEPS_GO"])
    lane = build(tempfile.mkdtemp(dir=go.parent))  # removed with the parent's directory
    replace(step, lane)
    run = requester(lane)
    run(300)
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.05)
    status, _ = run(requests)
    print(status, flush=True)
    os._exit(0)  # the interpreter's teardown is not the request's


def check(requests: int = 3) -> dict[str, Any]:
    """Each step replaced in turn, then put back, in one app: the answer it gives and how often
    the lane called the replacement (a step no longer on the lane's path would count 0 and cost
    nothing in the table). Run by the tests, without valgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        lane = build(tmp)
        run = requester(lane)
        outcome: dict[str, Any] = {}
        for step in ["", *STEPS]:
            undo, calls = replace(step, lane)
            status, body = run(requests)
            undo()
            outcome[step] = {"status": status, "body": body.decode(), "calls": calls[0]}
        return outcome


def build(tmp: str) -> Any:
    """The lane granian calls (``modelyard.server``), of the app ``create_app`` builds on ``tmp``."""
    import logging

    sys.path.insert(0, str(ROOT))
    from modelyard.app import create_app

    app = create_app({"database": {"url": f"sqlite:///{tmp}/registry.db"},
                      "artifacts": {"root": f"{tmp}/artifacts"},
                      "auth": {"admin_token_file": f"{tmp}/admin.token"}})
    logging.disable(logging.WARNING)
    return app.wsgi_app


def requester(lane: Any) -> Callable[[int], tuple[str, bytes]]:
    """``run(n)``: ``n`` requests handed to the lane as granian hands them; the last status and body."""
    statuses: list[str] = []

    def start_response(status: str, headers: Iterable[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    def run(n: int) -> tuple[str, bytes]:
        body = b""
        for _ in range(n):
            body = b"".join(lane({"REQUEST_METHOD": "POST", "PATH_INFO": "/predict",
                                  "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)),
                                  "wsgi.input": io.BytesIO(BODY)}, start_response))
        return statuses[-1], body

    return run


def replace(step: str, lane: Any) -> tuple[Callable[[], None], list[int]]:
    """Put ``step``'s result, computed once, in place of the step. Returns what puts the step
    back, and a counter of the calls of the result."""
    import numpy as np

    import modelyard.registry.beacon as beacon
    import modelyard.serving.http as http
    import modelyard.serving.service as service
    from modelyard.serving.decode import Decoded
    from modelyard.serving.protocols import JSON_HEADERS, Reply, Request, native

    calls = [0]
    undo: list[Callable[[], None]] = []

    def const(value: Any) -> Callable[..., Any]:
        def result(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return value
        return result

    def put(target: Any, name: str, value: Any) -> None:
        if isinstance(target, dict):
            old = target[name]
            target[name] = value
            undo.append(lambda: target.__setitem__(name, old))
        else:
            old = getattr(target, name)
            setattr(target, name, value)
            undo.append(lambda: setattr(target, name, old))

    put(beacon, "MAX_AGE_SECONDS", 1e9)  # at valgrind's pace the 0.1 s re-read would come every few requests
    predictor = lane.handler._predictor
    resolved = predictor.resolve(None, "iris", "production")
    entry = predictor.entry(None, "iris", resolved.version, resolved.sha256)
    if step == "predict":
        put(entry, "value", entry.value.__class__(**{**vars(entry.value), "predict": const(np.array([0]))}))
    elif step == "decode":
        put(service, "decode", const(Decoded(np.array([[5.1, 3.5, 1.4, 0.2]]), True)))
    elif step == "read":
        read = native.read(BODY, Request("application/json"))
        put(http.PROTOCOLS, "native", type("Read", (), {"read": staticmethod(const(read)),
                                                        "accepts": staticmethod(native.accepts)})())
    elif step == "write":
        put(native.NativeRead, "write", const(Reply(ANSWER, JSON_HEADERS)))
    elif step == "entry":
        put(predictor, "entry", const(entry))
    elif step == "resolve":
        put(predictor, "resolve", const(resolved))
    elif step == "body":
        put(http, "read_body", const(BODY))
    elif step == "offer":
        put(predictor, "observer", types.SimpleNamespace(offer=const(None), flush=predictor.observer.flush))
    elif step == "metrics":
        put(lane, "observe", const(None))
    elif step:
        raise ValueError(f"unknown step {step!r}")

    def restore() -> None:
        for one in reversed(undo):
            one()

    return restore, calls


if __name__ == "__main__":
    main()
