"""Files that pass the scan but explode when loaded get a 422, and the server keeps serving."""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.registry import sandbox, zygote
from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact
from tests.conftest import admin_client
from tests.factories import fitted_logreg

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
SMALL = sandbox.Limits(timeout_seconds=20, memory_bytes=256 << 20)


def _bytearray_bomb(size: int) -> bytes:
    """builtins.bytearray is on the allowlist (models hold bytearrays); asked for a huge one it
    is a memory bomb the scanner cannot see."""
    return b"\x80\x02cbuiltins\nbytearray\n" + b"\x8a\x05" + size.to_bytes(5, "little") + b"\x85R."


def _joblib_array_bomb() -> bytes:
    """A joblib file whose array wrapper claims a shape of 10^12 float64s."""
    buffer = io.BytesIO()
    joblib.dump(np.zeros(3), buffer, protocol=2)  # no frames: the stream can be edited in place
    data = buffer.getvalue()
    shape = b"K\x03\x85"  # BININT1 3, TUPLE1
    assert data.count(shape) == 1
    return data.replace(shape, b"\x8a\x06" + (10**12).to_bytes(6, "little") + b"\x85")


def test_the_bomb_passes_the_scan() -> None:
    from modelyard.registry import safety

    assert safety.scan(_bytearray_bomb(10**11)) == {"builtins.bytearray"}
    pickletools.dis(_bytearray_bomb(10**11), out=io.StringIO())


@pytest.mark.parametrize("data, fmt", [(_bytearray_bomb(10**11), "pickle"), (_joblib_array_bomb(), "joblib")],
                         ids=["bytearray", "joblib-array"])
def test_memory_bombs_are_refused_in_the_child(data: bytes, fmt: str) -> None:
    with pytest.raises(InvalidArtifact):
        sandbox.inspect_artifact(data, fmt, spec=sandbox.Trial(), limits=SMALL)


def test_a_hostile_global_found_in_the_child_keeps_its_name() -> None:
    import os

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return os.system, ("true",)

    buffer = io.BytesIO()
    joblib.dump({"x": np.array([Payload()], dtype=object)}, buffer)
    with pytest.raises(UnsafeArtifact) as err:
        sandbox.inspect_artifact(buffer.getvalue(), "joblib", spec=sandbox.Trial(), limits=SMALL)
    assert err.value.global_ in {"posix.system", "os.system"}


def test_a_slow_load_is_cut_off() -> None:
    with pytest.raises(InvalidArtifact, match="took longer than"):
        sandbox.inspect_artifact(pickle.dumps(fitted_logreg()), "pickle", spec=sandbox.Trial(),
                                 limits=sandbox.Limits(timeout_seconds=0.0001, memory_bytes=1 << 30))


def test_a_real_model_is_described_by_the_child() -> None:
    info = sandbox.inspect_artifact(pickle.dumps(fitted_logreg()), "pickle", spec=sandbox.Trial(), limits=SMALL)
    assert info.estimator.endswith("LogisticRegression") and info.n_features == 4 and info.classes == [0, 1, 2]


def test_bombs_over_http_are_422_and_the_server_keeps_serving(config: dict[str, Any]) -> None:
    app = create_app({**config, "upload": {"trial_memory_bytes": 256 << 20}})
    client: FlaskClient = admin_client(app)
    for data in (_bytearray_bomb(10**11), _joblib_array_bomb()):
        response = client.post("/models/bomb/versions", data={"file": (io.BytesIO(data), "m")},
                               content_type="multipart/form-data")
        assert response.status_code == 422, response.json
        assert response.json["code"] == 422
    assert client.get("/models/bomb").status_code == 404
    assert client.post("/predict", json=SETOSA).json["predictions"] == [0]


def _probe(payload: bytes, directory: str, port: int, other_pid: int) -> bytes:
    """In a sandbox child: take the trial's limits, then try every way to touch the world."""
    import json
    import os
    import socket

    from modelyard.registry import sandbox

    restriction = sandbox._limit(sandbox.Limits(timeout_seconds=10, memory_bytes=1 << 30))
    attempts = {
        "create": lambda: open(os.path.join(directory, "new"), "w").close(),
        "write": lambda: open(os.path.join(directory, "existing"), "a").write("x"),
        "truncate": lambda: os.truncate(os.path.join(directory, "existing"), 0),
        "remove": lambda: os.remove(os.path.join(directory, "existing")),
        "rename": lambda: os.rename(os.path.join(directory, "existing"), os.path.join(directory, "moved")),
        "mkdir": lambda: os.mkdir(os.path.join(directory, "sub")),
        "symlink": lambda: os.symlink("/etc/passwd", os.path.join(directory, "link")),
        "connect": lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close(),
        "signal": lambda: os.kill(other_pid, 0),
        "read": lambda: open(os.path.join(directory, "existing")).read(),
    }
    results = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            results[name] = "allowed"
        except OSError:
            results[name] = "denied"
    results["abi"] = restriction.abi
    return json.dumps(results).encode()


def test_the_trial_child_can_change_no_file_open_no_connection_and_signal_no_process(tmp_path: Path) -> None:
    import json
    import socket
    import subprocess

    from modelyard.registry import landlock

    (tmp_path / "existing").write_text("kept")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    other = subprocess.Popen(["sleep", "30"])
    try:
        answer = zygote.run(_probe, b"", (str(tmp_path), listener.getsockname()[1], other.pid),
                            timeout=30, answer_limit=1 << 16)
        results = json.loads(answer)
    finally:
        other.kill()
        listener.close()
    assert results.pop("read") == "allowed"  # imports must keep working
    abi = results.pop("abi")
    assert abi == landlock.abi() >= 6, "this machine's kernel offers Landlock ABI 6+; the sandbox must use it"
    assert results == dict.fromkeys(results, "denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert (tmp_path / "existing").read_text() == "kept"
