"""The derived allowlist: every scikit-learn class is admitted or refused by a named family,
nothing dangerous is admitted, every refusal names every offending global, and an admin's
extra names are checked."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.config import ConfigError
from modelyard.registry import safety
from modelyard.registry.errors import UnsafeArtifact
from modelyard.registry.safety import allowlist
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client


def test_every_scikit_learn_class_is_admitted_or_refused_by_a_named_family() -> None:
    """Fails when an installed scikit-learn defines a class nobody has classified: admit it (a
    STATE_FAMILIES base) or refuse it (a REFUSED_FAMILIES entry with the reason)."""
    unclassified = [
        allowlist.qualified(cls) for cls in allowlist.sklearn_classes()
        if allowlist.state_family(cls) is None and allowlist.refused_family(cls) is None
    ]
    assert unclassified == []


def test_every_admitted_class_is_on_the_allowlist() -> None:
    admitted = {allowlist.qualified(c) for c in allowlist.sklearn_classes() if allowlist.state_family(c)}
    assert len(admitted) > 300
    assert admitted <= allowlist.derived()


def test_every_state_family_exists_in_the_installed_scikit_learn() -> None:
    """A family renamed or removed upstream must be noticed, not silently admit nothing."""
    defined = {allowlist.qualified(c) for c in allowlist.sklearn_classes()}
    assert sorted(set(allowlist.STATE_FAMILIES) - defined) == []


@pytest.mark.parametrize("name", [
    "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "builtins.open",
    "builtins.compile", "os.system", "posix.system", "subprocess.Popen", "importlib.import_module",
    "functools.partial", "operator.attrgetter", "operator.methodcaller", "pickle.loads", "joblib.load",
    "numpy.load", "numpy.save", "numpy.fromfile", "numpy.loadtxt", "numpy.memmap", "numpy.lib.format.read_array",
    "numpy.testing._private.utils.runstring", "numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct",
    "numpy.vectorize", "numpy.frompyfunc", "numpy.ctypeslib.load_library",
    "sklearn.utils._testing.check_output", "sklearn.utils.parallel.Parallel", "sklearn.utils.parallel.delayed",
    "sklearn.datasets._openml.fetch_openml", "sklearn.datasets._base.load_files",
    "sklearn.utils.deprecation.deprecated",
    "sklearn.utils._pprint._EstimatorPrettyPrinter", "scipy.io.loadmat", "scipy.stats._distn_infrastructure.rv_frozen",
])
def test_what_reads_writes_imports_or_evaluates_is_not_admitted(name: str) -> None:
    assert name not in allowlist.derived()


def test_no_prefix_is_admitted() -> None:
    assert all(not n.endswith((".", "*")) and "." in n for n in allowlist.derived())


def test_functions_admitted_are_only_ufuncs_metrics_selectors_and_named_internals() -> None:
    import inspect

    functions = []
    for name in allowlist.derived():
        target = _resolve(name)
        if target is not None and (inspect.isfunction(target) or inspect.isbuiltin(target)) and not isinstance(target,
                                                                                                               np.ufunc):
            functions.append(name)
    allowed_modules = ("sklearn.metrics.", "sklearn.feature_selection.",
                       "sklearn.cluster._kmeans.", "scipy._lib.", "numpy.random.", "numpy._core.", "numpy.core.",
                       "numpy.ma.core.", "sklearn.neighbors.", "sklearn._loss._loss.", "sklearn.")
    strays = [n for n in functions if not n.startswith(allowed_modules) and n not in {
        "numpy.mean", "numpy.median", "_codecs.encode", "copyreg._reconstructor"}]
    assert strays == []


def _resolve(name: str) -> Any:
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def test_feature_selection_score_functions_are_admitted() -> None:
    import sklearn.feature_selection as selection

    for name in ("chi2", "f_classif", "f_regression", "mutual_info_classif", "mutual_info_regression"):
        assert allowlist.qualified(getattr(selection, name)) in allowlist.derived()


def test_ufuncs_a_function_transformer_holds_are_admitted() -> None:
    for ufunc in ("log", "log1p", "exp", "expm1", "sqrt", "square", "abs", "arctanh", "tanh"):
        assert f"numpy.{ufunc}" in allowlist.derived()


def test_a_refusal_names_every_offending_global() -> None:
    import os
    import subprocess

    class Call:
        def __init__(self, func: Any, *args: Any) -> None:
            self.func, self.args = func, args

        def __reduce__(self) -> Any:
            return self.func, self.args

    payload = pickle.dumps([Call(os.system, "true"), Call(subprocess.Popen, ["true"]), Call(eval, "1")])
    with pytest.raises(UnsafeArtifact) as err:
        safety.scan(payload)
    assert set(err.value.globals_) == {"posix.system", "subprocess.Popen", "builtins.eval"}
    assert err.value.errors["globals"] == err.value.globals_
    assert "3 globals not on the allowlist" in err.value.message


def test_a_search_that_keeps_scipy_distributions_is_refused_naming_them(client: FlaskClient) -> None:
    """The README says so: register its best_estimator_ instead."""
    from scipy.stats import loguniform
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RandomizedSearchCV

    X = np.random.RandomState(0).rand(30, 3)
    search = RandomizedSearchCV(LogisticRegression(), {"C": loguniform(1e-2, 1e2)}, n_iter=2, random_state=0)
    response = _upload(client, pickle.dumps(search.fit(X, [0, 1, 2] * 10)))
    assert response.status_code == 422
    assert any(g.startswith("scipy.stats.") for g in response.json["errors"]["globals"])
    assert _upload(client, pickle.dumps(search.best_estimator_)).status_code == 201


class TeamScaler:
    """A team's own transformer (importable on the server: it lives in this test module)."""

    def fit(self, X: Any, y: Any = None) -> TeamScaler:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2.0


def _team_model() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X = np.random.RandomState(0).rand(30, 3)
    return make_pipeline(TeamScaler(), LogisticRegression()).fit(X, [0, 1, 2] * 10)


def _upload(client: FlaskClient, data: bytes) -> Any:
    return client.post("/models/team/versions", data={"file": (io.BytesIO(data), "m.pkl")},
                       content_type="multipart/form-data")


def test_a_teams_own_class_is_refused_by_default(client: FlaskClient) -> None:
    response = _upload(client, pickle.dumps(_team_model()))
    assert response.status_code == 422
    assert response.json["errors"]["globals"] == [f"{__name__}.TeamScaler"]
    assert "extra_globals" in response.json["message"]


def test_extra_globals_admit_a_teams_own_class(config: dict[str, Any]) -> None:
    app = create_app({**config, "upload": {"extra_globals": [f"{__name__}.TeamScaler"]}})
    try:
        client = admin_client(app)
        response = _upload(client, pickle.dumps(_team_model()))
        assert response.status_code == 201, response.json
        answer = client.post("/models/team/1/predict", json={"inputs": [[0.1, 0.2, 0.3]]})
        assert answer.status_code == 200
        assert answer.json["predictions"] == _team_model().predict([[0.1, 0.2, 0.3]]).tolist()
    finally:
        app.extensions[EXTENSION].engine.dispose()


@pytest.mark.parametrize("names, fragment", [
    (["nosuchmodule.Thing"], "cannot be imported"),
    ([f"{__name__}.NoSuchClass"], "cannot be imported"),
    (["sklearn.*"], "not an exact module.name"),
    (["os"], "not an exact module.name"),
])
def test_bad_extra_globals_stop_the_start_naming_the_key(config: dict[str, Any], tmp_path: Path,
                                                         names: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"\[upload\] extra_globals") as err:
        create_app({**config, "upload": {"extra_globals": names}})
    assert fragment in str(err.value)
