"""The Open Inference Protocol V2 through Triton's own Python client (tritonclient[http]) against
a real `modelyard serve`: health, server and model metadata, readiness, and infer with FP32 and
FP64 NumPy inputs, binary and JSON tensors, a version and an alias, predict_proba."""

from __future__ import annotations

import json
import pickle
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.factories import fitted_logreg
from tests.serve_helpers import running_server, upload

pytestmark = pytest.mark.slow

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_server(tmp_path_factory.mktemp("v2"), workers=1) as running:
        data = pickle.dumps(fitted_logreg())
        upload(running["base"], running["token"], "flowers", data)
        upload(running["base"], running["token"], "flowers", data)
        promote = urllib.request.Request(f"{running['base']}/models/flowers/versions/1/promote", data=b"{}",
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Authorization": f"Bearer {running['token']}"})
        urllib.request.urlopen(promote, timeout=30).close()
        yield running


@pytest.fixture
def client(server: dict[str, Any]) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server["base"].removeprefix("http://"))
    yield client
    client.close()


def _input(array: np.ndarray, datatype: str, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelyard" and "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("iris")
    assert client.is_model_ready("flowers", "2")
    assert client.is_model_ready("flowers", "production")
    assert not client.is_model_ready("nothing")
    iris = client.get_model_metadata("iris")
    assert iris["versions"] == ["1"] and iris["platform"] == "scikit-learn"
    assert iris["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert iris["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]  # the SVC has no proba
    flowers = client.get_model_metadata("flowers", "1")
    assert flowers["versions"] == ["1", "2"]
    assert flowers["outputs"][1] == {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}
    with pytest.raises(InferenceServerException, match="model 'nothing' not found"):
        client.get_model_metadata("nothing")


def test_infer_fp32_binary_as_tritonclient_sends_by_default(client: triton.InferenceServerClient) -> None:
    result = client.infer("iris", [_input(ROWS.astype(np.float32), "FP32")], request_id="req-1")
    assert result.as_numpy("predict").tolist() == [0, 2]
    assert result.as_numpy("predict").dtype == np.int64
    response = result.get_response()
    assert response["id"] == "req-1"
    assert response["model_name"] == "iris" and response["model_version"] == "1"


def test_infer_fp64_json_a_version_and_predict_proba(client: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("predict", binary_data=False),
               triton.InferRequestedOutput("predict_proba", binary_data=True)]
    result = client.infer("flowers", [_input(ROWS, "FP64", binary=False)], model_version="2", outputs=outputs)
    assert result.get_response()["model_version"] == "2"
    assert result.as_numpy("predict").tolist() == [0, 2]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (2, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba, fitted_logreg().predict_proba(ROWS))
    by_alias = client.infer("flowers", [_input(ROWS, "FP64")], model_version="production",
                            outputs=[triton.InferRequestedOutput("predict_proba")])
    assert by_alias.get_response()["model_version"] == "1"
    assert by_alias.as_numpy("predict") is None  # only what was asked
    np.testing.assert_allclose(by_alias.as_numpy("predict_proba"), proba)


def test_parameters_pass_through(client: triton.InferenceServerClient) -> None:
    result = client.infer("iris", [_input(ROWS, "FP64")], parameters={"trace": "abc"})
    assert result.get_response()["parameters"] == {"trace": "abc"}


@pytest.mark.parametrize(("model", "inputs", "outputs", "words"), [
    ("nothing", [ROWS], None, "model 'nothing' not found"),
    ("iris", [ROWS[:, :3]], None, "has 3 values, the model takes 4"),
    ("iris", [ROWS], ["predict_proba"], "unknown output 'predict_proba'"),
])
def test_errors_reach_the_client_with_their_message(client: triton.InferenceServerClient, model: str,
                                                    inputs: list[np.ndarray], outputs: list[str] | None,
                                                    words: str) -> None:
    requested = [triton.InferRequestedOutput(name) for name in outputs] if outputs else None
    with pytest.raises(InferenceServerException, match=words):
        client.infer(model, [_input(array, "FP64") for array in inputs], outputs=requested)


def test_errors_under_v2_read_error(server: dict[str, Any]) -> None:
    for path, status in (("/v2/models/nothing", 404), ("/v2/models/iris/versions/9/ready", 404),
                         ("/v2/nothing", 404)):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server["base"] + path, timeout=30)
        assert caught.value.code == status
        assert set(json.loads(caught.value.read())) == {"error"}


def _readme_block(marker: str) -> str:
    """The README's Python example that mentions ``marker``."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    [block] = [b for b in blocks if marker in b]
    return block


@pytest.mark.parametrize(("marker", "expected"), [
    ("tritonclient", "True [{'name': 'input', 'datatype': 'FP64', 'shape': [-1, 4]}]\n[0 2] 1\n"),
    ("requests.post", "{'predictions': [0, 2]} {'predictions': [0, 2]} {'predictions': [0, 2]}\n"),
])
def test_the_readme_examples_run_as_written(server: dict[str, Any], marker: str, expected: str) -> None:
    import subprocess
    import sys

    code = _readme_block(marker).replace("127.0.0.1:8080", server["base"].removeprefix("http://"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
