"""Trial-load an uploaded model in a child process with a time and memory limit.

A file that passes the scan may still explode when loaded (a huge array, a huge bytearray) or
misbehave; the child takes the blow, the server keeps serving. Children fork from a zygote
(:mod:`registry.zygote`) that has scikit-learn imported already, so a trial costs milliseconds,
not an interpreter start, and is safe to start from a threaded server. The child answers in JSON only:
the parent never unpickles anything a child sends. Before it loads anything the child gives up,
through Landlock, every right to change a file, open a TCP connection or signal another process
(see :func:`_limit`).
"""

from __future__ import annotations

import dataclasses
import json
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.registry import introspect, landlock, profile, safety, zygote
from modelyard.registry.errors import InvalidArtifact, ModelyardError, UnsafeArtifact
from modelyard.registry.storage import Data

_ANSWER_LIMIT = 16 << 20  # a reference's profile rides in the answer: room for many string features
Explainability = Callable[[Any, Sequence[str], dict[str, Any] | None], str | None]


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 30.0
    memory_bytes: int = 4 << 30
    max_expanded_bytes: int = 4 << 30  # what a compressed joblib file or a skops archive may expand to
    extra_globals: frozenset[str] = frozenset()  # [upload] extra_globals, admitted beside the allowlist
    reference_max_rows: int = 100_000  # [observe]: the rows an upload's reference may hold
    max_categories: int = 20  # [observe]: a string feature's categories profiled by name (the rest: other)
    # serving.explain's check, handed over by the app: the trial records whether the version can
    # be explained (a module-level function: it is pickled to the child by name)
    explainability: Explainability | None = None


@dataclass(frozen=True)
class Trial:
    """What the uploader said that the trial needs: feature names and aliases (to read records),
    and the ``example`` rows to predict (probe rows when None)."""

    feature_names: list[str] | None = None
    feature_aliases: dict[str, str] = dataclasses.field(default_factory=dict)
    example: Any = None
    reference: Any = None  # the upload's reference rows: profiled here, with the estimator's predictions of them
    reference_max_rows: int = 100_000
    max_categories: int = 20
    explainability: Explainability | None = None  # Limits.explainability: why a version cannot be explained


def trial(data: bytes, fmt: str, spec: Trial, *, extra: frozenset[str] = frozenset()) -> introspect.EstimatorInfo:
    """Load, inspect and trial-predict in this process (the body of the sandboxed child). Every
    joblib-parallel predict runs sequentially here: a model fitted with ``n_jobs=-1`` (a forest,
    say) would otherwise start a pool the sandbox forbids (its locks), and fail to upload."""
    import joblib

    with joblib.parallel_config(backend="sequential"):
        return _trial_here(data, fmt, spec, extra=extra)


def _trial_here(data: bytes, fmt: str, spec: Trial, *, extra: frozenset[str]) -> introspect.EstimatorInfo:
    loaded = safety.load_recorded(data, fmt, extra=extra)
    info = introspect.inspect(loaded.estimator, names_hint=spec.feature_names, aliases=spec.feature_aliases,
                              example=spec.example)
    built = None
    if spec.reference is not None:
        built = profile.of_reference(loaded.estimator, info, spec.reference, names=spec.feature_names,
                                     aliases=spec.feature_aliases, max_rows=spec.reference_max_rows,
                                     max_categories=spec.max_categories)
    unexplainable = None
    if spec.explainability is not None and info.n_features:
        names = spec.feature_names or info.feature_names or [f"x{i}" for i in range(info.n_features)]
        unexplainable = spec.explainability(loaded.estimator, names, built)
    explainable = None if spec.explainability is None else unexplainable is None
    return dataclasses.replace(info, load_warnings=loaded.warnings, pickled_with=loaded.pickled_with,
                               profile=built, explainable=explainable, unexplainable=unexplainable)


def inspect_artifact(data: Data, fmt: str, *, spec: Trial, limits: Limits) -> introspect.EstimatorInfo:
    """Load ``data`` through the safety gate in a child, describe it and trial-predict (see
    :func:`registry.introspect.inspect`).

    Raises UnsafeArtifact / InvalidArtifact (422) for what the child found, and InvalidArtifact
    when the child runs out of time or memory or dies.
    """
    try:
        raw = zygote.run(_trial, data, (fmt, spec, limits), timeout=limits.timeout_seconds,
                         answer_limit=_ANSWER_LIMIT)
    except zygote.Timeout:
        raise InvalidArtifact(f"loading the model took longer than {limits.timeout_seconds:g} s") from None
    except zygote.Died as exc:
        raise InvalidArtifact(f"loading the model crashed its sandbox ({exc}); "
                              f"it may need more than {limits.memory_bytes} bytes of memory") from None
    return _read_answer(raw)


def _read_answer(raw: bytes) -> introspect.EstimatorInfo:
    answer = json.loads(raw)
    if "info" in answer:
        return introspect.EstimatorInfo(**answer["info"])
    if answer.get("error") == "unsafe":
        raise UnsafeArtifact(answer["globals"], answer["reason"])
    raise InvalidArtifact(answer.get("message", "the model could not be loaded"), errors=answer.get("errors"))


def warm() -> bool:
    """Start the trial zygote now, from the server's master before it forks its workers, with
    everything a trial needs imported: the first upload in every worker then costs what later
    ones do. See :mod:`registry.zygote`."""
    return zygote.fork_warm(_preload)


def _preload() -> None:
    from modelyard.registry import sandbox_preload  # noqa: F401 - imports and builds the allowlist


def _trial(data: bytes, fmt: str, spec: Trial, limits: Limits) -> bytes:
    """The sandboxed child: take the limits, then load and describe; answer in JSON only."""
    try:
        _limit(limits)
        info = trial(data, fmt, spec, extra=limits.extra_globals)
        answer: dict[str, Any] = {"info": dataclasses.asdict(info)}
    except UnsafeArtifact as exc:
        answer = {"error": "unsafe", "globals": exc.globals_, "reason": exc.reason}
    except ModelyardError as exc:
        answer = {"error": "invalid", "message": exc.message, "errors": exc.errors}
    except MemoryError:
        answer = {"error": "invalid",
                  "message": f"loading the model needs more than {limits.memory_bytes} bytes of memory"}
    except BaseException as exc:  # the child reports everything; the parent decides
        answer = {"error": "invalid", "message": f"the model could not be loaded: {type(exc).__name__}: {exc}"}
    return json.dumps(answer, default=str).encode()


def _limit(limits: Limits) -> landlock.Restriction:
    """Cap what the child may take and do: address space beyond what it already maps, CPU
    seconds, no byte written to any file (RLIMIT_FSIZE), and, where the kernel has Landlock, no
    file created, changed, removed or renamed, no TCP connection, no signal to another process
    (a payload that somehow ran could neither drop a file nor call out). Returns what Landlock
    enforces here."""
    mapped = _mapped_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limits.memory_bytes, mapped + limits.memory_bytes))
    cpu = max(1, int(limits.timeout_seconds) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    return landlock.forbid_writes()


def _mapped_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
