"""What an uploaded pickle may import: exact names, derived from the installed libraries.

The rule, in one paragraph: a global is admitted when it is (1) a class defined in
scikit-learn's own modules that belongs to a family of objects fitted estimators hold as state:
estimators, loss and link objects, tree structures and tree nodes, optimizers, kernels and their
hyperparameters, cross-validation splitters, scorers, metadata-request objects, distance
metrics (``STATE_FAMILIES``: each family is named by its base class, with the reason), together
with the pickle helpers Cython writes for exactly those classes; (2) a NumPy or SciPy
reconstructor, scalar type or container that arrays, random states and sparse matrices pickle
through (``_NUMPY_SCIPY``); (3) a pure function that estimators store as a parameter: every
NumPy ufunc (elementwise arithmetic, nothing else), the metric functions scikit-learn's named
scorers hold, the score functions of its univariate feature selectors, and the few internals
listed in ``_SKLEARN_FUNCTIONS``; (4) a harmless builtin (``_BUILTINS``). Everything is an
exact ``module.qualname``; no prefix is ever admitted, because ``numpy``, ``scipy`` and
``sklearn`` all contain functions that read, write, import or evaluate. A team may add exact
names of its own classes with ``[upload] extra_globals``.

Every other class scikit-learn defines falls in a family of ``REFUSED_FAMILIES`` (fit-time
machinery, displays, exceptions ...), and tests/registry/test_allowlist.py fails when an
installed scikit-learn defines a class in neither, so an upgrade cannot silently start
refusing models (or admitting something nobody looked at).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

# Base class (module.qualname) -> why fitted estimators hold instances of it and its subclasses.
STATE_FAMILIES: dict[str, str] = {
    "sklearn.base.BaseEstimator": "estimators, also nested in pipelines and meta-estimators",
    "sklearn._loss.loss.BaseLoss": "loss objects of gradient boosting, GLMs, HistGradientBoosting",
    "sklearn._loss._loss.CyLossFunction": "Cython losses, including SGD's (Hinge, ModifiedHuber ...)",
    "sklearn._loss._loss.CyHalfMultinomialLoss": "the multinomial Cython loss",
    "sklearn._loss.link.BaseLink": "link functions of the losses",
    "sklearn._loss.link.Interval": "value ranges of the losses",
    "sklearn.tree._tree.Tree": "decision trees' node arrays",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": "HistGradientBoosting's trees",
    "sklearn.neighbors._kd_tree.BinaryTree64": "KDTree held by neighbours estimators",
    "sklearn.neighbors._kd_tree.BinaryTree32": "KDTree (float32)",
    "sklearn.neighbors._ball_tree.BinaryTree64": "BallTree held by neighbours estimators",
    "sklearn.neighbors._ball_tree.BinaryTree32": "BallTree (float32)",
    "sklearn.cluster._birch._CFNode": "Birch's tree nodes",
    "sklearn.cluster._birch._CFSubcluster": "Birch's subclusters",
    "sklearn.cluster._bisect_k_means._BisectingTree": "BisectingKMeans' tree",
    "sklearn.neural_network._stochastic_optimizers.BaseOptimizer": "the optimizer MLPs keep",
    "sklearn.gaussian_process.kernels.Kernel": "Gaussian process kernels",
    "sklearn.gaussian_process.kernels.Hyperparameter": "kernel hyperparameters",
    "sklearn.model_selection._split.BaseCrossValidator": "splitters searches and CV estimators keep",
    "sklearn.model_selection._split.BaseShuffleSplit": "shuffle splitters",
    "sklearn.model_selection._split._RepeatedSplits": "repeated splitters",
    "sklearn.metrics._scorer._BaseScorer": "scorers searches and threshold tuners keep",
    "sklearn.metrics._scorer._PassthroughScorer": "the scorer of an estimator's own score",
    "sklearn.metrics._scorer._MultimetricScorer": "multi-metric scorers",
    "sklearn.utils._metadata_requests.MetadataRequest": "metadata routing state",
    "sklearn.utils._metadata_requests.MethodMetadataRequest": "metadata routing state",
    "sklearn.utils._metadata_requests.MetadataRouter": "metadata routing state",
    "sklearn.utils._metadata_requests.MethodMapping": "metadata routing state",
    "sklearn.utils._metadata_requests.MethodPair": "metadata routing state",
    "sklearn.utils._metadata_requests.RouterMappingPair": "metadata routing state",
    "sklearn.metrics._dist_metrics.DistanceMetric": "distance metrics of neighbours estimators",
    "sklearn.utils._bunch.Bunch": "dict-like results (e.g. a ColumnTransformer's named_transformers_)",
    "sklearn.calibration._CalibratedClassifier": "CalibratedClassifierCV's calibrated estimators",
    "sklearn.compose._column_transformer.make_column_selector": "column selectors of a ColumnTransformer",
    "sklearn.impute._iterative._ImputerTriplet": "IterativeImputer's fitted steps",
}

# Families of scikit-learn classes that are never admitted, each with the reason. Matched as
# "module.qualname" prefixes of the class or of one of its bases (``^`` marks a base class).
REFUSED_FAMILIES: dict[str, str] = {
    "^builtins.BaseException": "exceptions and warnings: never model state",
    "sklearn.base.": "mixins: behaviour, never instantiated alone",
    "sklearn.callback.": "fit-time callbacks (a progress monitor starts a thread)",
    "sklearn.utils.parallel.": "runs arbitrary functions in parallel",
    "sklearn.utils.deprecation.": "a decorator",
    "sklearn.utils._param_validation.": "parameter validation",
    "sklearn.utils._repr_html.": "HTML display",
    "sklearn.utils._pprint.": "printing",
    "sklearn.utils._plotting.": "plotting",
    "sklearn.utils._set_output.": "output containers, chosen at call time",
    "sklearn.utils._tags.": "estimator tags, computed, not pickled",
    "sklearn.utils._available_if.": "a descriptor",
    "sklearn.utils._array_api.": "array namespaces, chosen at call time",
    "sklearn.utils._cython_blas.": "BLAS flags",
    "sklearn.utils._isfinite.": "an internal flag",
    "sklearn.utils._encode.": "encoding helpers, used while fitting",
    "sklearn.utils._mocking.": "test doubles",
    "sklearn.utils._seq_dataset.": "fit-time machinery (SGD's datasets)",
    "sklearn.utils._weight_vector.": "fit-time machinery (SGD's weights)",
    "sklearn.utils._vector_sentinel.": "fit-time machinery",
    "sklearn.utils._fast_dict.": "fit-time machinery",
    "sklearn.utils.optimize.": "fit-time machinery",
    "sklearn.utils._metadata_requests.": "metadata routing helpers that are not state",
    "sklearn.tree._criterion.": "fit-time machinery (split criteria)",
    "sklearn.tree._splitter.": "fit-time machinery (splitters of trees)",
    "sklearn.tree._partitioner.": "fit-time machinery",
    "sklearn.tree._tree.": "fit-time machinery (tree builders, pruners)",
    "sklearn.tree._utils.": "fit-time machinery",
    "sklearn.tree._export.": "export and plotting",
    "sklearn.tree._reingold_tilford.": "plotting",
    "sklearn.ensemble._hist_gradient_boosting.": "fit-time machinery (grower, histograms, splitting)",
    "sklearn.ensemble._gb.VerboseReporter": "fit-time progress printing",
    "sklearn.metrics._pairwise_distances_reduction.": "computation kernels, created per call",
    "sklearn.metrics._plot.": "plotting",
    "sklearn.metrics._scorer.": "scorer helpers that are not state",
    "sklearn.model_selection._plot.": "plotting",
    "sklearn.model_selection._search.": "parameter grids, used while fitting",
    "sklearn.model_selection._search_successive_halving.": "fit-time machinery",
    "sklearn.model_selection._split.": "splitter helpers that are not splitters",
    "sklearn.inspection.": "plotting",
    "sklearn.calibration.CalibrationDisplay": "plotting",
    "sklearn.neighbors._kd_tree.": "query-time machinery (heaps)",
    "sklearn.neighbors._ball_tree.": "query-time machinery (heaps)",
    "sklearn.neighbors._base.": "mixins",
    "sklearn.neighbors._quad_tree.": "fit-time machinery (t-SNE)",
    "sklearn.cluster._hierarchical_fast.": "fit-time machinery",
    "sklearn.cluster._hdbscan.": "fit-time machinery",
    "sklearn.cluster._feature_agglomeration.": "a mixin",
    "sklearn.linear_model._glm._newton_solver.": "fit-time machinery (solvers)",
    "sklearn.linear_model._linear_loss.": "fit-time machinery",
    "sklearn.linear_model._logistic.": "fit-time machinery",
    "sklearn.linear_model._ridge.": "fit-time machinery (operators)",
    "sklearn.linear_model._stochastic_gradient.": "fit-time machinery",
    "sklearn.linear_model._base.": "mixins",
    "sklearn._loss.loss.ArrayAPILossMixin": "a mixin",
    "sklearn.datasets.": "dataset download helpers",
    "sklearn.decomposition._dict_learning._BaseSparseCoding": "a mixin",
    "sklearn.discriminant_analysis.": "a mixin",
    "sklearn.feature_extraction.text._VectorizerMixin": "a mixin",
    "sklearn.feature_selection._base.": "a mixin",
    "sklearn.gaussian_process.kernels.": "kernel mixins",
}

# NumPy / SciPy names that arrays, dtypes, random states and sparse matrices pickle through.
_NUMPY_SCIPY = frozenset({
    "numpy.ndarray", "numpy.dtype",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy._core.numeric._frombuffer",
    "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar", "numpy.core.numeric._frombuffer",
    "numpy.ma.core._mareconstruct", "numpy.ma.MaskedArray", "numpy.ma.core.MaskedArray",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__bit_generator_ctor", "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM", "numpy.random._philox.Philox", "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence", "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator",
    "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_matrix", "scipy.sparse._coo.coo_matrix",
    "scipy.sparse._csr.csr_array", "scipy.sparse._csc.csc_array", "scipy.sparse._coo.coo_array",
    "scipy.interpolate._bsplines.BSpline",  # SplineTransformer's splines
})

# Pure functions scikit-learn estimators store, beyond the derived ones (see the docstring).
_SKLEARN_FUNCTIONS = frozenset({
    "sklearn.cluster._kmeans._kmeans_single_lloyd",  # BisectingKMeans keeps its k-means run
    "sklearn.cluster._kmeans._kmeans_single_elkan",
    # KDTree/BallTree/DistanceMetric pickle through newObj(cls) == cls.__new__(cls); cls is checked too.
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "sklearn.metrics._dist_metrics.newObj",
})
_FEATURE_SCORE_FUNCTIONS = ("chi2", "f_classif", "f_oneway", "f_regression", "mutual_info_classif",
                            "mutual_info_regression", "r_regression")
_NUMPY_POOLING = ("mean", "median")  # FeatureAgglomeration's pooling functions

_BUILTINS = frozenset({
    # builtins a pickle of a model legitimately contains; calling one only makes a value
    "builtins.slice", "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex",
    "builtins.object", "builtins.bytes", "builtins.float", "builtins.int", "builtins.bool", "builtins.str",
    "builtins.list", "builtins.tuple", "builtins.dict", "builtins.range",
    "__builtin__.bytes", "__builtin__.set", "__builtin__.frozenset", "__builtin__.slice", "__builtin__.object",
    "_codecs.encode",  # protocol 2 encodes bytes through it
    "copyreg._reconstructor", "copy_reg._reconstructor",  # protocols 0 and 1 rebuild objects through it
    "collections.OrderedDict", "collections.defaultdict",
})

# Parts of scikit-learn that are not model code: importing them is pointless or has side effects.
_SKIPPED_MODULE_PARTS = frozenset({"tests", "externals", "conftest", "experimental", "_testing",
                                   "estimator_checks", "_build_utils", "_min_dependencies", "__check_build"})


def importable(names: Iterable[str]) -> frozenset[str]:
    """``[upload] extra_globals`` checked: each exact name must import on this server (as pickle
    would import it: the longest importable module prefix, then attributes). Raises ValueError
    naming the first that does not."""
    checked = set()
    for name in names:
        module, _, attr = name.rpartition(".")
        while module:
            try:
                target: Any = importlib.import_module(module)
                break
            except ImportError:
                module, _, head = module.rpartition(".")
                attr = f"{head}.{attr}"
        else:
            raise ValueError(f"{name!r} cannot be imported on this server")
        try:
            for part in attr.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{name!r} cannot be imported on this server") from None
        checked.add(name)
    return frozenset(checked)


def allowed_globals(extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every global an uploaded pickle may import: :func:`derived`, plus ``extra``, the exact
    names an admin admitted with ``[upload] extra_globals``."""
    return derived() | extra if extra else derived()


def qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


@functools.cache
def derived() -> frozenset[str]:
    """Every name the rule admits under the installed libraries (without ``extra_globals``)."""
    names = set(_BUILTINS) | set(_NUMPY_SCIPY) | set(_SKLEARN_FUNCTIONS)
    for cls in sklearn_classes():
        if state_family(cls) is not None:
            names.add(qualified(cls))
            names.update(_cython_helpers(cls))
    names.update(_numpy_names())
    names.update(_scorer_functions())
    names.update(_feature_score_functions())
    names.update(_scipy_helpers())
    return frozenset(names)


def state_family(cls: type) -> str | None:
    """The STATE_FAMILIES base that admits ``cls``, or None."""
    for base in cls.__mro__:
        if qualified(base) in STATE_FAMILIES:
            return qualified(base)
    return None


def refused_family(cls: type) -> str | None:
    """The REFUSED_FAMILIES entry that covers ``cls``, or None."""
    names = [qualified(cls)]
    bases = [qualified(base) for base in cls.__mro__[1:]]
    for family in REFUSED_FAMILIES:
        if family.startswith("^"):
            if family[1:] in bases:
                return family
        elif any(name.startswith(family) for name in names):
            return family
    return None


@functools.cache
def sklearn_classes() -> tuple[type, ...]:
    """Every class defined in scikit-learn's modules (not its tests, externals or test utilities)."""
    import sklearn

    found: dict[str, type] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in _modules(sklearn.__path__, "sklearn."):
            for _name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__:
                    found.setdefault(qualified(cls), cls)
    return tuple(found[name] for name in sorted(found))


def _modules(path: Iterable[str], prefix: str) -> Iterator[Any]:
    for _finder, module_name, _is_pkg in pkgutil.walk_packages(path, prefix):
        if _SKIPPED_MODULE_PARTS.intersection(module_name.split(".")):
            continue
        try:
            yield importlib.import_module(module_name)
        except Exception:  # an optional dependency is missing: its classes cannot be loaded anyway
            continue


def _cython_helpers(cls: type) -> Iterator[str]:
    """``__pyx_unpickle_<Name>``: the function Cython pickles an extension type through; it
    rebuilds exactly that type."""
    module = importlib.import_module(cls.__module__)
    helper = f"__pyx_unpickle_{cls.__name__}"
    if hasattr(module, helper):
        yield f"{cls.__module__}.{helper}"


def _numpy_names() -> Iterator[str]:
    """NumPy's scalar types (float64, number, ...) and every ufunc, under their ``numpy.`` names."""
    import numpy as np

    for name in dir(np):
        value = getattr(np, name, None)
        if isinstance(value, np.ufunc) or (isinstance(value, type) and issubclass(value, np.generic)):
            yield f"numpy.{name}"
    for name in _NUMPY_POOLING:
        yield f"numpy.{name}"


def _scorer_functions() -> Iterator[str]:
    """The metric functions scikit-learn's named scorers (``scoring="..."``) hold."""
    from sklearn.metrics import get_scorer, get_scorer_names

    for name in get_scorer_names():
        func = getattr(get_scorer(name), "_score_func", None)
        if func is not None and inspect.isfunction(func):
            yield qualified(func)


def _feature_score_functions() -> Iterator[str]:
    """The score functions univariate feature selectors (SelectKBest ...) hold."""
    import sklearn.feature_selection as selection

    for name in _FEATURE_SCORE_FUNCTIONS:
        yield qualified(getattr(selection, name))


def _scipy_helpers() -> Iterator[str]:
    """The array-conversion function a SciPy BSpline keeps (``_asarray``)."""
    import numpy as np
    from scipy.interpolate import BSpline

    spline = BSpline(np.arange(10.0), np.ones(6), 3)
    for value in vars(spline).values():
        if inspect.isfunction(value):
            yield qualified(value)
