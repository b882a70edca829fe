"""Uploads of mutated real skops and joblib files, made here, through the whole upload path (format
detection, the zip and pickle readers, the sandbox trial, the store, the database): the answer is
always 201 or a JSON 422, never a 500, and the server still serves afterwards. Mutations aim where
readers break: zip local and central headers (flags, compression method, sizes, names), the
joblib container's magic and first bytes, anywhere at random, and truncation."""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any

import joblib
import skops.io
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from tests.factories import X, y

_MODELS = [
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X, y),
    DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y),
]


def _joblib(model: Any, compress: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=compress)
    return buffer.getvalue()


SEEDS: list[bytes] = [skops.io.dumps(m) for m in _MODELS]
SEEDS += [skops.io.dumps(_MODELS[0], compression=zipfile.ZIP_DEFLATED)]
SEEDS += [_joblib(m, c) for m in _MODELS for c in (0, 3, ("gzip", 3), ("lzma", 3), ("bz2", 3))]


# (offset, width, name) of the fields a zip reader trusts, per header signature.
_HEADERS = {
    b"PK\x03\x04": [(6, 2, "flags"), (8, 2, "method"), (14, 4, "crc"), (18, 4, "size"), (22, 4, "size"),
                    (26, 2, "length"), (28, 2, "length"), (30, 1, "name")],
    b"PK\x01\x02": [(8, 2, "flags"), (10, 2, "method"), (16, 4, "crc"), (20, 4, "size"), (24, 4, "size"),
                    (28, 2, "length"), (30, 2, "length"), (42, 4, "offset"), (46, 1, "name")],
    b"PK\x05\x06": [(8, 2, "count"), (10, 2, "count"), (12, 4, "size"), (16, 4, "offset")],
}


def _zip_fields(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Where every field of every zip header is (``any``), and the flags and methods among them."""
    fields: dict[str, list[tuple[int, int]]] = {"any": [], "flags": [], "method": []}
    for signature, layout in _HEADERS.items():
        at = data.find(signature)
        while at != -1:
            for offset, width, name in layout:
                fields["any"].append((at + offset, width))
                if name in fields:
                    fields[name].append((at + offset, width))
            at = data.find(signature, at + 1)
    return fields


mutation = st.one_of(
    st.tuples(st.just("field"), st.integers(min_value=0), st.integers(min_value=0, max_value=2**32 - 1)),
    st.tuples(st.just("bit"), st.integers(min_value=0), st.sampled_from([0x01, 0x08, 0x40, 0x800, 0x2000, 0x4000])),
    st.tuples(st.just("method"), st.integers(min_value=0), st.sampled_from([0, 1, 6, 8, 9, 12, 14, 93, 95, 98, 99])),
    st.tuples(st.just("head"), st.integers(min_value=0, max_value=63), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
)


def _mutate(data: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    fields = _zip_fields(data)
    targets = {"field": fields["any"], "bit": fields["flags"], "method": fields["method"]}
    for kind, position, value in steps:
        if kind in targets and targets[kind]:
            offset, width = targets[kind][position % len(targets[kind])]
            current = int.from_bytes(buf[offset:offset + width], "little")
            new = current | value if kind == "bit" else value
            buf[offset:offset + width] = (new % (1 << (8 * width))).to_bytes(width, "little")
        elif kind in ("head", "flip") and buf:
            buf[position % len(buf)] ^= value
        elif kind == "truncate":
            del buf[position % (len(buf) + 1):]
    return bytes(buf)


def _upload(client: FlaskClient, data: bytes) -> Any:
    return client.post("/models/fuzzed/versions", data={"file": (io.BytesIO(data), "model.bin")},
                       content_type="multipart/form-data")


def test_mutated_uploads_answer_201_or_422_and_the_server_still_serves(client: FlaskClient) -> None:
    answers: dict[int, int] = {}

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(seed=st.sampled_from(range(len(SEEDS))), steps=st.lists(mutation, min_size=1, max_size=3))
    def upload_mutated(seed: int, steps: list[tuple[str, int, int]]) -> None:
        response = _upload(client, _mutate(SEEDS[seed], steps))
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
        assert response.status_code in (201, 422), (steps, response.status_code, response.get_data(as_text=True))
        if response.status_code == 422:
            assert response.json["code"] == 422 and response.json["message"]

    upload_mutated()
    assert answers.get(422, 0) > 0
    for seed in SEEDS:  # the unmutated files still upload and predict
        assert _upload(client, seed).status_code == 201
    assert client.post("/models/fuzzed/latest/predict", json={"inputs": X[:2].tolist()}).status_code == 200
    assert client.post("/predict", json={"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4,
                                         "petal.width": 0.2}).json["predictions"] == [0]


def test_the_zip_fields_are_found() -> None:
    fields = _zip_fields(SEEDS[0])
    with zipfile.ZipFile(io.BytesIO(SEEDS[0])) as archive:
        members = len(archive.infolist())
    assert len(fields["any"]) == members * (8 + 9) + 4
    assert len(fields["flags"]) == len(fields["method"]) == 2 * members
    assert {struct.unpack_from("<H", SEEDS[0], offset)[0] for offset, _ in fields["method"]} == {zipfile.ZIP_STORED}
