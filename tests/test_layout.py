"""The package's layout: folders that show the layers, and imports that only point down.

Layers, lowest first (DESIGN.md): the base modules (exc, paths, logs), the core (nn), model
definitions and the hardware adapters (side by side: neither imports the other), storage,
training, export (checkpoints out as ONNX or npz), the service, the command line, the
studies (which drive the library from scripts/ and borrow the benchmark's PyTorch twin). A
module may import from its own layer and the layers below it, never from above; hardware
never imports the core.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pi_backprop"
BASE = {"exc", "paths", "logs", "budget"}
RANK = {"base": 0, "nn": 1, "modeldef": 2, "hardware": 2, "storage": 3, "training": 4, "export": 4.5,
        "service": 5,
        "cli": 6, "study": 6.5,
        "top": 2.5, "main": 7}  # top: the package itself (pb); main: python -m pi_backprop
TOP_LEVEL_MODULES = {"__init__", "__main__", "exc", "paths", "logs", "budget", "modeldef"}


def _layer(module):
    """Layer name of a dotted module inside the package ('pi_backprop.nn.layers' -> 'nn')."""
    parts = module.split(".")[1:]
    if not parts or parts[0] == "__init__":
        return "top"
    if parts[0] == "__main__":
        return "main"
    return "base" if parts[0] in BASE else parts[0]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield path, ".".join(parts[:-1] if is_package else parts), is_package


def _imports(path, module, is_package):
    """Absolute names of the pi_backprop modules (or their members) that ``path`` imports."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pi_backprop"):
                if target == "pi_backprop" or not node.module:
                    for alias in node.names:  # from . import checkpoint: the module named
                        yield f"{target}.{alias.name}", node.lineno
                else:
                    yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pi_backprop"):
                    yield alias.name, node.lineno


def test_imports_only_point_down():
    upward = []
    for path, module, is_package in _modules():
        mine = _layer(module)
        for target, line in _imports(path, module, is_package):
            theirs = _layer(target)
            if target == "pi_backprop.__version__" or theirs == mine:
                continue
            if RANK[theirs] >= RANK[mine]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {target} ({theirs})")
    assert not upward, "\n".join(upward)


def test_hardware_never_imports_the_core():
    for path, module, is_package in _modules():
        if _layer(module) == "hardware":
            assert not [t for t, _ in _imports(path, module, is_package) if _layer(t) == "nn"], path


@pytest.mark.parametrize("library", ["numba", "picamera2", "gpiozero"])
def test_heavy_libraries_are_imported_in_one_place(library):
    """numba only in the compiled engine (whose sources key the kernel cache); picamera2 and
    gpiozero only in the hardware adapters."""
    allowed = {"numba": "nn/engine/", "picamera2": "hardware/camera.py", "gpiozero": "hardware/"}[library]
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and not node.level}
        if library in names:
            assert str(path.relative_to(PACKAGE)).startswith(allowed), path


def test_few_modules_stand_at_the_top():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, sorted(top - TOP_LEVEL_MODULES)
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == {"nn", "storage", "training", "export", "hardware", "service", "cli", "study"}


def test_every_exception_class_lives_in_exc():
    import builtins

    from pi_backprop import exc
    error_names = {name for name, value in vars(exc).items() if isinstance(value, type)
                   and issubclass(value, BaseException)}
    error_names |= {name for name, value in vars(builtins).items() if isinstance(value, type)
                    and issubclass(value, BaseException)}
    elsewhere = []
    for path, module, _ in _modules():
        if module == "pi_backprop.exc":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(base, "id", getattr(base, "attr", None)) for base in node.bases}
                if bases & error_names:
                    elsewhere.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert not elsewhere, elsewhere
