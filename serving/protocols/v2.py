"""The Open Inference Protocol V2 (KServe's and Triton's REST API): typed tensors in, typed
tensors out, errors as ``{"error": "..."}``.

An infer request names its inputs: one 2-D tensor whose columns are the version's features in
order, or one 1-D tensor per feature named by the feature (or an alias). ``shape`` is checked
against ``data`` (flat in row-major order, or nested). Outputs are ``predict`` and, for a version
with ``predict_proba``, ``predict_proba``; a request may choose them (``outputs``), else it gets
every one. Triton's binary tensor extension is spoken both ways, as tritonclient uses it by
default: a JSON header of ``Inference-Header-Content-Length`` bytes, then each tensor's raw bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelyard.registry.errors import InvalidInput, UnreadableBody
from modelyard.serving.decode import FeatureSpec
from modelyard.serving.protocols import JSON_HEADERS, Reply, Request
from modelyard.serving.routes import Route
from modelyard.serving.rows import Rows
from modelyard.serving.service import LoadedModel, Prediction, PredictOptions
from modelyard.web.body import is_json, parse_json

HEADER_LENGTH = "HTTP_INFERENCE_HEADER_CONTENT_LENGTH"  # the WSGI name of Inference-Header-Content-Length
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
PREDICT, PROBA = "predict", "predict_proba"
MEDIA_TYPES = "application/json, or application/octet-stream with Inference-Header-Content-Length"


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


def accepts(mimetype: str) -> bool:
    """JSON, or binary tensors after a JSON header; tritonclient sends no Content-Type at all."""
    return mimetype in ("", "application/octet-stream") or is_json(mimetype)


@dataclass(slots=True)
class InferRead:
    """An infer request: its JSON (id, parameters, outputs) and input tensors. Its rows depend on
    the version that answers: inputs are named by its features, outputs by what it has."""

    request: dict[str, Any]
    tensors: list[tuple[str, np.ndarray]]
    options: PredictOptions

    def rows(self, model: LoadedModel) -> Any:
        _outputs(self.request, model)  # an output the version does not have is refused first
        return _body(self.tensors, model.features)

    def write(self, prediction: Prediction, route: Route) -> Reply:
        wanted, binary = _outputs(self.request, prediction.model)
        values = {PREDICT: prediction.predicted, PROBA: prediction.probabilities}
        outputs, blobs = [], []
        for output in wanted:
            tensor, blob = _tensor(output, values[output], binary[output])
            outputs.append(tensor)
            if blob is not None:
                blobs.append(blob)
        reply: dict[str, Any] = {"model_name": prediction.name, "model_version": str(prediction.version),
                                 "outputs": outputs}
        if "id" in self.request:
            reply["id"] = self.request["id"]
        parameters = {k: v for k, v in (self.request.get("parameters") or {}).items() if k != "binary_data_output"}
        if prediction.explanations is not None:  # per row: base_value + contributions = output
            parameters["explanations"] = prediction.explanations
        if parameters:
            reply["parameters"] = parameters
        header = orjson.dumps(reply)
        if not blobs:
            return Reply(header, JSON_HEADERS)
        return Reply(b"".join([header, *blobs]), [("Content-Type", "application/octet-stream"),
                                                  ("Inference-Header-Content-Length", str(len(header)))])


def read(raw: bytes, request: Request) -> InferRead:
    """``POST /v2/models/{name}[/versions/{ref}]/infer``: JSON, or binary tensors after a JSON
    header of ``Inference-Header-Content-Length`` bytes."""
    infer, tensors = _read(raw, request.header_length)
    asked = infer.get("outputs")
    names = {o.get("name") for o in asked if isinstance(o, dict)} if isinstance(asked, list) and asked else None
    proba = None if names is None else PROBA in names  # every output the version has, unless some are named
    given = infer.get("parameters")
    explain = given.get("explain", False) if isinstance(given, dict) else False
    if not isinstance(explain, bool):
        raise InvalidInput(f"parameters.explain must be true or false, got {explain!r}")
    return InferRead(infer, tensors, PredictOptions(proba=proba, may_hold_booleans=False,
                                                    request_key=request.request_key, explain=explain))


def _read(raw: bytes, header_length: str | None) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The request's JSON and its input tensors as arrays of their declared shape and type."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise UnreadableBody(f"Inference-Header-Content-Length {header_length!r} does not fit a "
                                f"{len(raw)}-byte body")
        size = int(header_length)
        request, rest = parse_json(raw[:size]), memoryview(raw)[size:]
    else:
        request, rest = parse_json(raw), memoryview(b"")
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInput("an infer request is a JSON object with a non-empty list of inputs")
    tensors, offset = [], 0
    for i, spec in enumerate(request["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput(f"input {i} must be an object with a name, shape, datatype and data")
        name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
        if datatype not in DTYPES:
            raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; one of {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
        binary_size = (spec.get("parameters") or {}).get("binary_data_size")
        if binary_size is not None:
            if not isinstance(binary_size, int) or binary_size < 0 or offset + binary_size > len(rest):
                raise UnreadableBody(f"input {name!r}: binary_data_size {binary_size!r} runs past the body")
            array = _from_bytes(rest[offset:offset + binary_size], datatype, name)
            offset += binary_size
        elif "data" in spec:
            array = _from_json(spec["data"], datatype, name)
        else:
            raise InvalidInput(f"input {name!r} has no data")
        count = math.prod(shape)
        if array.size != count:
            raise InvalidInput(f"input {name!r}: shape {shape} holds {count} values; its data has {array.size}")
        tensors.append((name, array.reshape(shape)))
    if offset != len(rest):
        raise UnreadableBody(f"the body has {len(rest) - offset} bytes after the tensors its header describes")
    return request, tensors


def _from_json(data: Any, datatype: str, name: str) -> np.ndarray:
    try:
        if datatype == "BYTES":
            return np.array(data, dtype=object).ravel()
        array = np.array(data, dtype=DTYPES[datatype])
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: its data is not {datatype} values in lists") from None
    # JSON numbers are finite (orjson refuses the rest); narrowing to FP32 or FP16 may overflow.
    if datatype in ("FP32", "FP16") and not np.isfinite(array).all():
        raise InvalidInput(f"input {name!r}: its data holds NaN or infinity")
    return array.ravel()


def _from_bytes(blob: memoryview, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
        items, at = [], 0
        while at < len(blob):
            if at + 4 > len(blob):
                raise UnreadableBody(f"input {name!r}: a BYTES element is cut short")
            (length,) = struct.unpack_from("<I", blob, at)
            items.append(bytes(blob[at + 4:at + 4 + length]).decode("utf-8", "replace"))
            at += 4 + length
        return np.array(items, dtype=object)
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(blob) % dtype.itemsize:
        raise UnreadableBody(f"input {name!r}: {len(blob)} bytes are not whole {datatype} values")
    array = np.frombuffer(blob, dtype=dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"input {name!r}: its data holds NaN or infinity")
    return array


def _outputs(request: dict[str, Any], model: LoadedModel) -> tuple[list[str], dict[str, bool]]:
    """The outputs to answer, in order, and which of them go as binary."""
    available = [PREDICT, PROBA] if model.has_proba else [PREDICT]
    everything = bool((request.get("parameters") or {}).get("binary_data_output"))
    asked = request.get("outputs")
    if not asked:
        return available, dict.fromkeys(available, everything)
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise InvalidInput("outputs must be a list of objects with a name")
    wanted, binary = [], {}
    for output in asked:
        if output["name"] not in available:
            raise InvalidInput(f"unknown output {output['name']!r}; this version has {', '.join(available)}")
        wanted.append(output["name"])
        binary[output["name"]] = bool((output.get("parameters") or {}).get("binary_data", everything))
    return wanted, binary


def _body(tensors: list[tuple[str, np.ndarray]], spec: FeatureSpec) -> Any:
    """The input tensors as a body the decoder reads (a 2-D array of the features goes as is)."""
    if len(tensors) == 1 and (tensors[0][0] not in spec.column_of or tensors[0][1].ndim == 2):
        name, array = tensors[0]
        if spec.text:
            return [str(v) for v in array.ravel()]
        if array.ndim == 1 and len(spec.names) > 1:  # one row of the features
            array = array.reshape(1, -1)
        if array.ndim != 2:
            raise InvalidInput(f"input {name!r} must be 2-D [rows, {len(spec.names)} features], "
                               f"or give one 1-D input per feature")
        if spec.types is None and array.dtype != object and array.shape[1] == len(spec.names):
            return Rows(np.ascontiguousarray(array, dtype=np.float64), b"", None)
        return array.tolist()  # the decoder names what does not fit
    columns, data = [], []
    for name, array in tensors:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidInput(f"input {name!r}: one input per feature must be 1-D [rows]")
        columns.append(name)
        data.append(array.tolist())
    if len({len(column) for column in data}) > 1:
        raise InvalidInput("the inputs have different numbers of rows")
    return {"dataframe_split": {"columns": columns, "data": [list(row) for row in zip(*data, strict=True)]}}


def _tensor(name: str, value: Any, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    array = np.asarray(value)
    datatype = datatype_of(array.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        tensor["data"] = (array.astype(str) if datatype == "BYTES" else array).ravel().tolist()
        return tensor, None
    if datatype == "BYTES":
        blob = b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in array.ravel()))
    else:
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    tensor["parameters"] = {"binary_data_size": len(blob)}
    return tensor, blob


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The protocol's name for a NumPy dtype (strings and objects are BYTES)."""
    return _NAMES.get(dtype, "BYTES")


_NAMES = {np.dtype(candidate): name for name, candidate in DTYPES.items() if candidate is not np.object_}


def value_datatype(values: list[Any] | None) -> str:
    """The datatype of the values a version's classes hold (FP64 for a regressor: no classes)."""
    if not values:
        return "FP64"
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def metadata(name: str, numbers: list[int], version: Any) -> dict[str, Any]:
    """Model metadata for ``GET /v2/models/{name}[/versions/{v}]``: its versions, and the inputs
    and outputs of ``version`` (a registry version row or view)."""
    features, types = list(version.feature_names), version.feature_types
    if version.input_kind == "text":
        inputs = [{"name": features[0], "datatype": "BYTES", "shape": [-1]}]
    elif types:
        inputs = [{"name": f, "datatype": "BYTES" if t == "string" else "FP64", "shape": [-1]}
                  for f, t in zip(features, types, strict=True)]
    else:
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, len(features)]}]
    classes = version.classes or []
    nested = bool(classes) and isinstance(classes[0], list)
    outputs: list[dict[str, Any]] = [{"name": PREDICT, "datatype": value_datatype(classes[0] if nested else classes),
                                      "shape": [-1, len(classes)] if nested else [-1]}]
    if version.has_proba and classes and not nested:
        outputs.append({"name": PROBA, "datatype": "FP64", "shape": [-1, len(classes)]})
    return {"name": name, "versions": [str(n) for n in numbers], "platform": "scikit-learn",
            "inputs": inputs, "outputs": outputs}
