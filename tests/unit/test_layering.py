"""Layering: the serving path never imports the offline training code.

``infershield.training`` pulls in training-only dependencies (torch for fine-tuning) and
ought to be removable from a serving image; a runtime module that imports it, even lazily
inside a function, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "python" / "infershield"
RUNTIME = ("checks", "detectors", "pipeline", "server", "backends")
FORBIDDEN = "infershield.training"


def _runtime_modules() -> list[Path]:
    files: list[Path] = []
    for name in RUNTIME:
        pkg, mod = PACKAGE / name, PACKAGE / f"{name}.py"
        files += sorted(pkg.rglob("*.py")) if pkg.is_dir() else [mod]
    return files


def _imported_names(source: str, module: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every module name imported anywhere in ``source`` (the module at dotted path
    ``module``, which names its package for ``__init__``), relative imports resolved."""
    pkg = module[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out += [(node.lineno, base), *((node.lineno, f"{base}.{a.name}") for a in node.names)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return out


def _training_imports(source: str, module: tuple[str, ...]) -> list[str]:
    return [f"line {line}: {name}" for line, name in _imported_names(source, module)
            if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")]


def test_every_runtime_package_is_walked() -> None:
    files = _runtime_modules()
    assert all(f.is_file() for f in files)
    for name in RUNTIME:
        assert any(name in f.relative_to(PACKAGE).with_suffix("").parts for f in files), name


@pytest.mark.parametrize("path", _runtime_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runtime_module_does_not_import_training(path: Path) -> None:
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    assert _training_imports(path.read_text(encoding="utf-8"), module) == []


@pytest.mark.parametrize("source", [
    "import infershield.training.finetune\n",
    "from infershield.training import evaluate\n",
    "from infershield import training\n",
    "def f():\n    from ..training.head import train_head\n",
    "from .. import training\n",
    "import importlib\nimportlib.import_module('infershield.training.cli')\n",
])
def test_the_lint_catches_each_import_form(source: str) -> None:
    assert _training_imports(source, ("infershield", "checks", "probe"))


def test_the_lint_passes_runtime_imports() -> None:
    source = "from ..detectors.runtime import window_starts\nfrom . import base\n"
    assert _training_imports(source, ("infershield", "checks", "probe")) == []


#: The core below the transport: it never imports the gRPC servicers (``infershield.server``).
CORE = ("backends", "call", "firewall", "pipeline", "limits")


@pytest.mark.parametrize(
    "path",
    [f for name in CORE for f in (sorted((PACKAGE / name).rglob("*.py"))
                                  if (PACKAGE / name).is_dir() else [PACKAGE / f"{name}.py"])],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_core_module_does_not_import_the_server(path: Path) -> None:
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    imported = _imported_names(path.read_text(encoding="utf-8"), module)
    names = [f"line {line}: {name}" for line, name in imported
             if name == "infershield.server" or name.startswith("infershield.server.")]
    assert names == []
