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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
BODY = json.dumps({"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}).encode()
ANSWER = b'{"model":"iris","version":1,"predictions":[0],"labels":["setosa"],"target_value":0}'
# Each step, and what replacing it with its precomputed result leaves out
STEPS = {
    "predict": "the estimator call (fast-path guard, libsvm, classes)",
    "decode": "decoding the record into an array",
    "read": "the protocol's read (read_rows, orjson, the options)",
    "write": "writing the answer (answer, orjson.dumps)",
    "entry": "the cache lookup (Predictor.entry, LRUCache.get)",
    "resolve": "resolving the ref (RefCache.resolve)",
    "body": "reading the body (read_body)",
    "auth": "authorization",
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
    import logging

    sys.path.insert(0, str(ROOT))
    from modelyard.app import create_app

    go = Path(os.environ["STEPS_GO"])
    tmp = tempfile.mkdtemp(dir=go.parent)  # removed with the parent's directory
    app = create_app({"database": {"url": f"sqlite:///{tmp}/registry.db"},
                      "artifacts": {"root": f"{tmp}/artifacts"},
                      "auth": {"admin_token_file": f"{tmp}/admin.token"}})
    logging.disable(logging.WARNING)
    lane = app.wsgi_app  # what granian calls (modelyard.server)
    replace(step, lane)
    statuses: list[str] = []

    def start_response(status: str, headers: Iterable[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    def run(n: int) -> None:
        for _ in range(n):
            b"".join(lane({"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "CONTENT_TYPE": "application/json",
                           "CONTENT_LENGTH": str(len(BODY)), "wsgi.input": io.BytesIO(BODY)}, start_response))

    run(300)
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.05)
    run(requests)
    print(statuses[-1], flush=True)
    os._exit(0)  # the interpreter's teardown is not the request's


def replace(step: str, lane: Any) -> None:
    """Put ``step``'s result, computed once, in place of the step."""
    import numpy as np

    import modelyard.registry.beacon as beacon
    import modelyard.serving.http as http
    import modelyard.serving.service as service
    from modelyard.serving.decode import Decoded
    from modelyard.serving.protocols import Reply, Request, native

    beacon.MAX_AGE_SECONDS = 1e9  # at valgrind's pace the 0.1 s re-read would come every few requests
    predictor = lane.handler._predictor
    resolved = predictor.resolve(None, "iris", "production")
    entry = predictor.entry(None, "iris", resolved.version, resolved.sha256)
    const: Callable[[Any], Callable[..., Any]] = lambda value: lambda *args, **kwargs: value  # noqa: E731
    if step == "predict":
        entry.value = entry.value.__class__(**{**vars(entry.value), "predict": const(np.array([0]))})
    elif step == "decode":
        service.decode = const(Decoded(np.array([[5.1, 3.5, 1.4, 0.2]]), True))
    elif step == "read":
        read = native.read(BODY, Request("application/json"))
        http.PROTOCOLS["native"] = type("Read", (), {"read": staticmethod(const(read)),
                                                     "accepts": staticmethod(native.accepts)})()
    elif step == "write":
        native.NativeRead.write = const(Reply(ANSWER, native.JSON_HEADERS))
    elif step == "entry":
        predictor.entry = const(entry)
    elif step == "resolve":
        predictor.resolve = const(resolved)
    elif step == "body":
        http.read_body = const(BODY)
    elif step == "auth":
        http.authorize = const(None)
    elif step == "offer":
        predictor.observer = None
    elif step == "metrics":
        lane.observe = const(None)


if __name__ == "__main__":
    main()
