"""skops files, checked from their ``schema.json`` before skops builds anything: every type and
function the schema names must be on the allowlist, and only the node kinds a scikit-learn model
is written with are accepted. skops's own list of untrusted types is a second opinion only (skops
0.10/0.11 reported only ``builtins.int`` for the CVE-2025-54413 file)."""

from __future__ import annotations

from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact
from modelyard.registry.safety.allowlist import allowed_globals
from modelyard.registry.safety.archive import Archive
from modelyard.registry.safety.scanner import MAX_EXPANDED_BYTES
from modelyard.registry.storage import Data

_SKOPS_SCHEMA_LIMIT = 64 << 20


def skops_names(data: Data, *, max_expanded_bytes: int = MAX_EXPANDED_BYTES) -> list[str]:
    """Every ``module.name`` a skops file's schema refers to (types, functions, objects), read
    from its ``schema.json`` without loading anything. The archive is checked whole first
    (:mod:`registry.safety.archive`)."""
    import json

    with Archive(data, what="skops archive", max_expanded_bytes=max_expanded_bytes) as archive:
        raw = archive.read("schema.json", _SKOPS_SCHEMA_LIMIT)
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidArtifact(f"skops archive: member 'schema.json' is not JSON: {exc}") from None
    names: list[str] = []
    seen: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            loader = node.get("__loader__")
            if loader is not None and not (isinstance(loader, str) and loader in _SKOPS_LOADERS):
                raise UnsafeArtifact(f"skops {loader}", _SKOPS_REFUSED_LOADERS.get(str(loader),
                                                                                   "not a node modelyard reads"))
            module, cls = node.get("__module__"), node.get("__class__")
            if module is not None or cls is not None:
                name = f"{module}.{cls}"
                if name not in seen:
                    seen.add(name)
                    names.append(name)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


# The skops node kinds a scikit-learn model is written with; each builds only the type its
# __module__/__class__ name, which is checked against the allowlist.
_SKOPS_LOADERS = frozenset({
    "DictNode", "DefaultDictNode", "ListNode", "SetNode", "TupleNode", "BytesNode", "BytearrayNode", "SliceNode",
    "FunctionNode", "TypeNode", "JsonNode", "ObjectNode", "ConstructorFromReduceNode", "CachedNode",
    "NdArrayNode", "MaskedArrayNode", "DTypeNode", "RandomStateNode", "RandomGeneratorNode", "SparseMatrixNode",
    "TreeNode", "LossNode", "SGDNode", "BSplineNode",
})
_SKOPS_REFUSED_LOADERS = {
    "MethodNode": "bound methods are looked up by name on a loaded object (CVE-2025-54413)",
    "OperatorFuncNode": "operator.attrgetter/itemgetter/methodcaller reach any attribute (CVE-2025-54412)",
    "PartialNode": "functools.partial binds arguments to a function",
}


def check_skops(data: Data, *, extra: frozenset[str] = frozenset(),
                max_expanded_bytes: int = MAX_EXPANDED_BYTES) -> list[str]:
    """The names a skops file refers to, all allowed; raises UnsafeArtifact naming every one
    that is not (see :func:`load`), InvalidArtifact for an archive that is not whole and plain."""
    return checked_skops_names(data, allowed_globals(extra), max_expanded_bytes=max_expanded_bytes)


def checked_skops_names(data: Data, allowed: frozenset[str], *,
                        max_expanded_bytes: int = MAX_EXPANDED_BYTES) -> list[str]:
    import skops.io

    names = skops_names(data, max_expanded_bytes=max_expanded_bytes)
    refused = [n for n in names if n not in allowed and n not in SKOPS_PLAIN]
    if refused:
        raise UnsafeArtifact(refused)
    # skops's own view as a second opinion: anything it calls untrusted must be allowed too.
    try:
        untrusted = skops.io.get_untrusted_types(data=data if isinstance(data, bytes) else bytes(data))
    except Exception as exc:  # noqa: BLE001 - whatever skops cannot read is not a skops model
        raise InvalidArtifact(f"not a valid skops file: {type(exc).__name__}: {exc}") from None
    refused = [n for n in untrusted if n not in allowed]
    if refused:
        raise UnsafeArtifact(refused)
    return names


# JSON values of a skops schema name their Python type; none of these is imported or called.
SKOPS_PLAIN = frozenset({"builtins.NoneType", "builtins.str", "builtins.int", "builtins.float", "builtins.bool",
                          "builtins.dict", "builtins.list", "builtins.tuple"})
