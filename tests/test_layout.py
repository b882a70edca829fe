"""The floor plan's rules (DESIGN.md, Layout), checked on the imports the code really makes.

- ``registry/`` never imports ``serving/``;
- blueprints (the registry's REST API and schemas, serving's HTTP modules) import nothing of the
  roof but ``modelyard.web``;
- the rest of ``registry/`` and serving's domain import neither the roof, nor Flask (or another
  web library), nor a blueprint module;
- ``modelyard.web`` imports nothing of the roof;
- no module is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"registry": ROOT / "registry", "serving": ROOT / "serving", "web": ROOT / "modelyard" / "web"}
BLUEPRINTS = {"registry/api.py", "registry/alias_api.py", "registry/webhook_api.py", "registry/observe_api.py",
              "registry/schemas.py",
              "serving/api.py", "serving/http.py",
              "serving/routes.py", "serving/protocols/native.py", "serving/protocols/mlflow.py",
              "serving/protocols/v2.py", "serving/protocols/__init__.py", "serving/v2_api.py"}
WEB_FRAMEWORKS = ("flask", "flask_smorest", "werkzeug", "webargs", "marshmallow")
MAX_LINES = 400


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            prefix = "modelyard/web" if package == "web" else package
            found.append((f"{prefix}/{path.relative_to(folder)}", path))
    for path in sorted((ROOT / "modelyard").glob("*.py")):
        found.append((f"modelyard/{path.name}", path))
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _roof(name: str) -> bool:
    """A module of the roof: ``modelyard.<x>`` other than the registry, serving and web."""
    parts = name.split(".")
    return parts[0] == "modelyard" and len(parts) > 1 and parts[1] not in ("registry", "serving", "web", "__version__")


def _blueprint(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "modelyard" and "/".join(parts[1:3]) + ".py" in BLUEPRINTS


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_each_module_keeps_to_its_floor(module: str, path: Path) -> None:
    imports = _imports(path)
    if module.startswith("registry/"):
        assert not {name for name in imports if name.startswith("modelyard.serving")}, "registry imports serving"
    if module.startswith(("registry/", "serving/", "modelyard/web/")):
        assert not {name for name in imports if _roof(name)}, "imports the roof (only modelyard.web may be used)"
    if module.startswith(("registry/", "serving/")) and module not in BLUEPRINTS:
        web = {name for name in imports if name.startswith("modelyard.web") or name.split(".")[0] in WEB_FRAMEWORKS
               or _blueprint(name)}
        assert not web, f"the domain knows no web: {sorted(web)}"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_is_over_400_lines(module: str, path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_rules_see_every_module() -> None:
    names = {module for module, _ in MODULES}
    assert {"registry/service.py", "registry/refs.py", "serving/service.py", "modelyard/web/context.py",
            "modelyard/app.py"} <= names
    assert BLUEPRINTS <= names
