"""Preparing an upload: what the uploader says (:class:`VersionSpec`) and what is read off the
file (scan -> sandbox trial -> checks against the uploader's metadata), before anything is
stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.registry import introspect, safety, sandbox
from modelyard.registry.errors import InvalidInput
from modelyard.registry.storage import Data


@dataclass
class VersionSpec:
    """What the uploader says about a version; everything else is read off the estimator."""

    fmt: str | None = None  # None: detected from the content
    description: str = ""
    feature_names: Sequence[str] | None = None
    feature_aliases: dict[str, str] = field(default_factory=dict)
    labels: Sequence[Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    example: Any = None  # rows or records for the trial predict, kept with the version
    reference: Any = None  # rows or records of the training data: profiled (registry.profile), not kept


@dataclass(frozen=True)
class Prepared:
    fmt: str
    spec: VersionSpec
    info: introspect.EstimatorInfo
    feature_names: list[str]
    labels: list[Any] | None
    profile: dict[str, Any] | None = None


def prepare_version(data: Data, spec: VersionSpec, *, limits: sandbox.Limits | None) -> Prepared:
    """Scan, load and inspect an artifact, and check what the uploader said against it.

    ``limits`` None is for trusted bytes only: they are loaded in this process.
    """
    fmt = safety.resolve_format(data, spec.fmt)
    extra = (limits or sandbox.Limits()).extra_globals
    expands = (limits or sandbox.Limits()).max_expanded_bytes
    # Cheap, and refuses hostile files before a child is started.
    if fmt == "skops":
        safety.check_skops(data, extra=extra, max_expanded_bytes=expands)
    else:
        safety.scan(data, fmt, max_expanded_bytes=expands, extra=extra)
    given = limits or sandbox.Limits()
    trial = sandbox.Trial(list(spec.feature_names) if spec.feature_names is not None else None,
                          dict(spec.feature_aliases), spec.example, spec.reference, given.reference_max_rows,
                          given.max_categories, given.explainability)
    if limits is None:  # trusted bytes, never a large upload
        info = sandbox.trial(data if isinstance(data, bytes) else bytes(data), fmt, trial)
    else:
        info = sandbox.inspect_artifact(data, fmt, spec=trial, limits=limits)
    names = _feature_names(spec, info)
    unknown_targets = sorted({t for t in spec.feature_aliases.values() if t not in names})
    if unknown_targets:
        raise InvalidInput(
            f"feature aliases point at unknown features: {', '.join(unknown_targets)}",
            errors={"feature_aliases": unknown_targets},
        )
    clashing = sorted(a for a in spec.feature_aliases if a in names)
    if clashing:
        raise InvalidInput(f"feature aliases must not be feature names: {', '.join(clashing)}",
                           errors={"feature_aliases": clashing})
    labels = list(spec.labels) if spec.labels is not None else None
    if labels is not None and info.classes and isinstance(info.classes[0], list):
        raise InvalidInput("labels are for single-output classifiers; this estimator has "
                           f"{len(info.classes)} outputs", errors={"labels": labels})
    if labels is not None and (info.classes is None or len(labels) != len(info.classes)):
        expected = "no classes" if info.classes is None else f"{len(info.classes)} classes"
        raise InvalidInput(f"{len(labels)} labels given, but the estimator has {expected}",
                           errors={"labels": labels})
    return Prepared(fmt=fmt, spec=spec, info=info, feature_names=names, labels=labels, profile=info.profile)


def _feature_names(spec: VersionSpec, info: introspect.EstimatorInfo) -> list[str]:
    given = list(spec.feature_names) if spec.feature_names is not None else None
    if given is not None and len(set(given)) != len(given):
        raise InvalidInput("feature names must be unique", errors={"features": given})
    if given is not None and info.feature_names is not None and given != info.feature_names:
        raise InvalidInput(
            "the feature names given differ from those the estimator was fitted with "
            f"({', '.join(info.feature_names)})",
            errors={"features": given, "expected": info.feature_names},
        )
    names = given if given is not None else info.feature_names
    if names is None:
        if info.n_features is None:
            raise InvalidInput("the estimator does not record its number of features; give feature names",
                               errors={"features": None})
        names = [f"x{i}" for i in range(info.n_features)]
    if info.n_features is not None and len(names) != info.n_features:
        raise InvalidInput(
            f"{len(names)} feature names given, but the estimator takes {info.n_features} features",
            errors={"features": names},
        )
    if not names:
        raise InvalidInput("a model needs at least one feature", errors={"features": names})
    return names
