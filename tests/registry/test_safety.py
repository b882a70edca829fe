"""The scanner and restricted loader on real models and on hand-made hostile streams.

The full hostile corpus belongs to the security work; these pin the mechanisms the seeded
model relies on: exact-name allowlist, STACK_GLOBAL traced through the memo, no execution.
"""

import os
import pickle
import pickletools
from pathlib import Path

import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from modelyard.registry import safety
from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact

X, y = load_iris(return_X_y=True)


class _Payload:
    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.func, self.args


@pytest.mark.parametrize(
    "estimator",
    [SVC(kernel="linear"), LogisticRegression(max_iter=300), RandomForestClassifier(n_estimators=3, random_state=0),
     make_pipeline(StandardScaler(), SVC())],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_estimators_load_and_predict(estimator: object, protocol: int) -> None:
    fitted = estimator.fit(X, y)  # type: ignore[attr-defined]
    loaded = safety.load(pickle.dumps(fitted, protocol=protocol), "pickle")
    assert (loaded.predict(X[:5]) == fitted.predict(X[:5])).all()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("func", [os.system, eval, exec, getattr, __import__, open], ids=lambda f: f.__name__)
def test_hostile_callables_are_rejected_without_running(tmp_path: Path, func: object, protocol: int) -> None:
    marker = tmp_path / "marker"
    data = pickle.dumps(_Payload(func, f"touch {marker}"), protocol=protocol)
    with pytest.raises(UnsafeArtifact):
        safety.load(data, "pickle")
    assert not marker.exists()


def test_rejection_names_the_global() -> None:
    data = pickle.dumps(_Payload(os.system, "true"), protocol=4)
    with pytest.raises(UnsafeArtifact) as err:
        safety.scan(data)
    assert err.value.global_ in {"posix.system", "os.system"}


def test_module_prefix_is_not_enough() -> None:
    # numpy.load is in an allowed package, but only exact names are allowed.
    import numpy

    data = pickle.dumps(_Payload(numpy.load, "/etc/passwd"), protocol=4)
    with pytest.raises(UnsafeArtifact, match="numpy"):
        safety.scan(data)


def _stack_global_via_memo(module: str, name: str) -> bytes:
    """Protocol 4 stream whose STACK_GLOBAL names come from memo GETs, not literals."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw

    return (b"\x80\x04" + s("builtins") + b"\x94" + s(name) + b"\x94"   # memo 0, 1
            + b"0" + b"0"                                                    # POP both
            + b"h\x00" + b"h\x01" + b"\x93"                                 # GETs, STACK_GLOBAL
            + s("true") + b"\x85R.")


def test_stack_global_names_are_traced_through_the_memo() -> None:
    with pytest.raises(UnsafeArtifact) as err:
        safety.scan(_stack_global_via_memo("builtins", "eval"))
    assert err.value.global_ == "builtins.eval"


def test_stack_global_with_computed_names_is_rejected() -> None:
    # The module name is produced by a call to an allowed global, not a literal: the scanner
    # cannot know it, so it refuses.
    stream = (b"\x80\x04" + b"\x8c\x08builtins" + b"\x8c\x03set" + b"\x93" + b"\x8c\x02os\x85R"
              + b"\x8c\x06system" + b"\x93" + b"\x8c\x04true\x85R.")
    with pytest.raises(UnsafeArtifact, match="not literal"):
        safety.scan(stream)


@pytest.mark.parametrize("data", [b"", b"not a pickle", pickle.dumps(SVC())[:-10]])
def test_garbage_and_truncated_streams_are_invalid(data: bytes) -> None:
    with pytest.raises((InvalidArtifact, UnsafeArtifact)):
        safety.load(data, "pickle")


def test_extension_codes_are_rejected() -> None:
    stream = b"\x80\x02\x82\x01)R."  # EXT1 1, EMPTY_TUPLE, REDUCE
    with pytest.raises(UnsafeArtifact, match="extension"):
        safety.scan(stream)


def test_scanner_sees_the_same_globals_the_pickle_uses() -> None:
    data = pickle.dumps(SVC(kernel="linear").fit(X, y), protocol=5)
    found = safety.scan(data)
    assert "sklearn.svm._classes.SVC" in found
    listed = {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert listed <= found


@pytest.mark.parametrize("how", ["method", "operator", "partial", "function", "object"])
def test_skops_files_are_refused_without_trusting_skops_own_report(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """skops 0.10/0.11 reported only builtins.int as untrusted for the CVE-2025-54413 file; a skops
    that reports nothing must not let any of these through."""
    import skops.io

    from tests.registry import corpus

    data = corpus._skops_tampered(f"touch {tmp_path / 'marker'}", how)
    monkeypatch.setattr(skops.io, "get_untrusted_types", lambda **_kwargs: [])
    with pytest.raises(UnsafeArtifact):
        safety.check_skops(data)
    with pytest.raises(UnsafeArtifact):
        safety.load(data, "skops")
    assert not (tmp_path / "marker").exists()


def test_a_skops_model_loads_with_exactly_the_names_modelyard_checked() -> None:
    import skops.io

    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    data = skops.io.dumps(model)
    names = safety.check_skops(data)
    assert "sklearn.pipeline.Pipeline" in names
    assert (safety.load(data, "skops").predict(X[:3]) == model.predict(X[:3])).all()
