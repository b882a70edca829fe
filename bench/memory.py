"""What a large model costs a host: PSS (shared pages counted once across processes) of the whole
server (master, workers, the trial zygote) before a model is uploaded and after every worker has
served it, for 1, 2 and 4 workers, as a multiple of the model's array bytes.

Models: a k-nearest-neighbours regressor (its training rows are the arrays; scikit-learn predicts
from them in place, so serving.mapped shares one copy per host), a random forest of about the
same size (scikit-learn's trees copy their nodes into memory of their own when unpickled: a
compiled forest shares them instead) and that forest behind a scaler in a pipeline (the scaler
mapped from joblib, the forest compiled). `--large` adds ~200 MB neighbours and forest.

    .venv/bin/python bench/memory.py [--quick] [--large]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import PYTHON, free_port, modelyard_env, post, pss_bytes, server, upload, wrk  # noqa: E402


def models(large: bool) -> list[tuple[str, Any, int]]:
    """``(name, estimator, its bytes: the size of its pickle, which is its arrays and little
    else)``: ~48 MB of training rows or trees each, and ~200 MB with ``large``."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    found = []
    for size_mb in (48, 200) if large else (48,):
        rows = size_mb * 2**20 // (8 * 16)
        X = rng.normal(size=(rows, 16))
        knn = KNeighborsRegressor(algorithm="kd_tree").fit(X, X[:, 0])  # no BLAS buffers in a query
        found.append((f"knn-{size_mb}mb", knn, len(pickle.dumps(knn))))  # its rows, and its kd-tree's copy
        n = 20_000
        Xf = rng.normal(size=(n, 16))
        forest = RandomForestRegressor(n_estimators=1, random_state=0).fit(Xf, Xf @ rng.normal(size=16))
        per_tree = _tree_bytes(forest)
        trees = max(1, size_mb * 2**20 // per_tree)
        forest = RandomForestRegressor(n_estimators=trees, random_state=0, n_jobs=-1).fit(Xf, Xf @ rng.normal(size=16))
        found.append((f"forest-{size_mb}mb", forest, len(pickle.dumps(forest))))
        if size_mb == 48:  # the deployed shape: a forest behind its preprocessing (its steps fitted already)
            piped = Pipeline([("scale", StandardScaler().fit(Xf)), ("forest", forest)])
            found.append(("piped-forest-48mb", piped, len(pickle.dumps(piped))))
    return found


def _tree_bytes(forest: Any) -> int:
    return sum(t.tree_.__getstate__()["nodes"].nbytes + t.tree_.__getstate__()["values"].nbytes
               for t in forest.estimators_)


def measure(work: Path, name: str, estimator: Any, array_bytes: int, workers: int) -> dict[str, Any]:
    port = free_port()
    home = work / f"{name}-{workers}"
    env = modelyard_env(home, MODELYARD_SERVER_PORT=str(port), MODELYARD_SERVER_WORKERS=str(workers),
                        MODELYARD_SERVER_THREADS="2", MODELYARD_CACHE_PRELOAD_ALIASES="",
                        MODELYARD_OBSERVE_SAMPLE_RATE="0")
    body = json.dumps({"inputs": [[0.0] * 16]}).encode()
    with server([PYTHON, "-m", "modelyard.cli", "serve"], env, port, work / f"{name}-{workers}.log") as process:
        token = (home / "admin.token").read_text().strip()
        upload(port, token, name, pickle.dumps(estimator))
        time.sleep(1.0)
        before = pss_bytes(process.pid)
        status, _ = post(port, f"/models/{name}/1/predict", body)
        assert status == 200, status
        # Load from many connections at once: granian hands them to every worker (a 100-row
        # predict each, so that a worker does not answer them all before the others start).
        rows = np.random.default_rng(1).normal(size=(100, 16)).round(3).tolist()  # many paths through each tree
        wrk(port, f"/models/{name}/1/predict", json.dumps({"inputs": rows}).encode(), 3, 16, f"{name}-{workers}", work)
        after = settled(process.pid)
    grown = after - before
    mapped = sum(p.stat().st_size for p in (home / "mapped").rglob("*") if p.is_file())
    return {"model": name, "workers": workers, "array_bytes": array_bytes, "host_pss_growth_bytes": grown,
            "per_worker_bytes": grown / workers, "growth_over_array_bytes": grown / array_bytes,
            "mapped_bytes": mapped}


def settled(pid: int, timeout: float = 60.0) -> int:
    """The server's PSS once it stops moving (workers still loading when the load ended finish
    first): two readings a second apart within 1 MiB."""
    deadline = time.monotonic() + timeout
    last = pss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = pss_bytes(pid)
        if abs(now - last) < 2**20:
            return now
        last = now
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers only")
    parser.add_argument("--large", action="store_true", help="also ~200 MB models")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelyard-memory-"))
    results = []
    print("memory: host PSS growth once every worker has served the model, against the model's bytes (its pickle)")
    for name, estimator, array_bytes in models(args.large):
        for workers in (1, 2) if args.quick else (1, 2, 4):
            found = measure(work, name, estimator, array_bytes, workers)
            results.append(found)
            print(f"  {name:<18} {workers} worker{'s' if workers > 1 else ' '}  model {array_bytes / 2**20:6.1f} MiB  "
                  f"host +{found['host_pss_growth_bytes'] / 2**20:7.1f} MiB = {found['growth_over_array_bytes']:.2f}x, "
                  f"{found['per_worker_bytes'] / 2**20:6.1f} MiB a worker; mapped copy "
                  f"{found['mapped_bytes'] / 2**20:.1f} MiB", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
