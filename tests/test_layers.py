"""The shape of the package: the module layers (docs/architecture.md), the
one importer of the C extension, type hints on the public API, a light
``import sandboxlib``, and the refusal of a stale extension."""
from __future__ import annotations

import ast
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys
import typing

import pytest

import sandboxlib as sb
from sandboxlib import Container, Mount

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sandboxlib"

# The module map of docs/architecture.md: a module may import its own layer and below.
LAYERS = {
    "errors": 0,
    "config": 1, "capabilities": 1, "host": 1, "_lowlevel": 1, "seccomp": 1, "seccomp_profile": 1,
    "idmap": 2, "seccomp_bpf": 2, "seccomp_prologue": 2, "users": 2, "rootfs": 2, "protocol": 2, "streams": 2,
    "sharedfd": 1, "interrupts": 1,
    "statedir": 2, "process": 2, "failures": 2, "launch": 2, "_forkserver": 2, "cgroups": 2, "stats": 2,
    "images": 2, "imageroot": 2, "transfer": 2, "_subids_worker": 2, "_safe_encoding": 2,
    "_plan": 3, "container": 3, "container_files": 3, "commit": 3, "calls": 3, "subids": 3, "writable": 3,
    "api": 4, "__init__": 4, "pool": 4, "magic": 4,
    "cli": 5, "imagecli": 5, "__main__": 5, "pytest_plugin": 5,
}


def _modules() -> dict:
    """Module name -> tree; a subpackage is one module (its files' trees
    with their imports of the parent package rewritten as level 1)."""
    found = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        body = []
        for path in sorted(package.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    continue  # inside the subpackage
                if isinstance(node, ast.ImportFrom) and node.level == 2:
                    node.level = 1
                if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
                    body.append(node)
        found[package.name] = ast.Module(body=[ast.Expr(n) if isinstance(n, ast.Call) else n for n in body],
                                         type_ignores=[])
    return found


def _imports(tree: ast.AST) -> set:
    """The sandboxlib modules a module imports (anywhere in it, also inside
    functions), by their short name; ``_native`` included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and node.module and node.module.split(".")[0] == "sandboxlib"):
                parts = (node.module or "").split(".")
                if node.level == 0:
                    parts = parts[1:]
                if parts and parts[0]:
                    found.add(parts[0])
                else:  # from . import a, b  /  from sandboxlib import a
                    found.update(alias.name for alias in node.names)
            elif node.level > 1:
                found.add("<outside the package>")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sandboxlib":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Call):
            # importlib.import_module("sandboxlib._native") / __import__(...)
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "_native" in arg.value:
                    found.add("_native")
    return found


def test_every_module_has_a_layer():
    assert sorted(_modules()) == sorted(LAYERS), "add the new module to LAYERS (and docs/architecture.md)"


def test_only_lowlevel_imports_native():
    importers = sorted(name for name, tree in _modules().items() if "_native" in _imports(tree))
    assert importers == ["_lowlevel"]


def test_no_upward_imports():
    upward = []
    for name, tree in _modules().items():
        for target in _imports(tree) - {"_native"}:
            if target not in LAYERS:
                upward.append(f"{name} imports unknown module {target}")
            elif LAYERS[target] > LAYERS[name]:
                upward.append(f"{name} (layer {LAYERS[name]}) imports {target} (layer {LAYERS[target]})")
    assert upward == []


def test_import_scanner_sees_imports():
    """The scanner finds every form of import (or the tests above prove nothing)."""
    code = ("from . import a, b\nfrom .c import x\nfrom .d.e import y\nimport sandboxlib.f\n"
            "from sandboxlib import g\nfrom sandboxlib.h import z\nimport os\n"
            "def f():\n    from ._native import lib\n    import importlib\n"
            "    importlib.import_module('sandboxlib._native')\n")
    assert _imports(ast.parse(code)) == {"a", "b", "c", "d", "f", "g", "h", "_native"}


def test_layers_match_the_architecture_document():
    text = (REPO / "docs" / "architecture.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line and ".py`" in line]
    documented = {}
    for row in rows:
        cell = row.split("|")[1].strip()
        layer, _, names = cell.partition(" ")
        if layer.isdigit():
            for part in names.split(","):
                documented[part.strip().strip("`").removesuffix(".py").removesuffix("/")] = int(layer)
    assert documented == LAYERS


# -- type hints --------------------------------------------------------------------------------
PUBLIC = {
    "sandboxlib.run": sb.run,
    "Container.__init__": Container.__init__,
    "Container.run": Container.run,
    "Container.spawn": Container.spawn,
    "Container.start": Container.start,
    "Container.stop": Container.stop,
    "Mount.bind": Mount.bind,
    "Mount.tmpfs": Mount.tmpfs,
    "Limits.from_dict": sb.Limits.from_dict,
    "Process.wait": sb.Process.wait,
    "Process.communicate": sb.Process.communicate,
    "Seccomp.default": sb.Seccomp.default,
    "Seccomp.from_json": sb.Seccomp.from_json,
    "Seccomp.deny": sb.Seccomp.deny,
    "Seccomp.kill": sb.Seccomp.kill,
    "Seccomp.allow": sb.Seccomp.allow,
    **{f"ImageStore.{name}": getattr(sb.ImageStore, name)
       for name in ("__init__", "list", "get", "tag", "remove", "prune", "load", "import_rootfs",
                    "from_directory", "save", "unpacked", "volume", "volumes", "remove_volume")},
    **{f"Container.{name}": getattr(Container, name)
       for name in ("write_file", "read_file", "put_archive", "get_archive", "commit")},
    "Mount.volume": Mount.volume,
    "Container.call": Container.call,
    "Container.invoke": Container.invoke,
    "Container.preload": Container.preload,
    "Container.session": Container.session,
    "sandboxlib.sandboxed": sb.sandboxed,
    "Pool.__init__": sb.Pool.__init__,
    "Pool.submit": sb.Pool.submit,
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_api_has_type_hints(name):
    func = PUBLIC[name]
    signature = inspect.signature(func)
    missing = [p.name for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    assert missing == [], f"{name}: parameters without a type hint: {missing}"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
    hints = typing.get_type_hints(func)  # the hints resolve (no misspelt names)
    assert set(hints) >= {p for p in signature.parameters if p not in ("self", "cls")} | {"return"}


def test_run_and_container_take_the_same_options():
    """``run()`` offers every option of ``Container`` (but ``config``)."""
    run_params = inspect.signature(sb.run).parameters
    container_params = inspect.signature(Container.__init__).parameters
    for name, param in container_params.items():
        if name in ("self", "config"):
            continue
        assert name in run_params, name
        assert run_params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert run_params[name].default == param.default, name


# -- import cost ---------------------------------------------------------------------------------
HEAVY = ("asyncio", "multiprocessing", "concurrent.futures", "ssl", "http.client", "email", "urllib.request",
         "xml.etree.ElementTree", "unittest", "ctypes", "argparse", "psutil", "pytest",
         "sandboxlib.cli", "IPython", "sandboxlib.magic", "sandboxlib.pool", "cloudpickle")


def test_import_is_light():
    code = ("import json, sys\nbefore = set(sys.modules)\nimport sandboxlib\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO),
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "sandboxlib.container" in loaded  # the measure works
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"import sandboxlib loads {heavy}"


# -- a stale extension ------------------------------------------------------------------------------
@pytest.fixture
def checkout_copy(tmp_path):
    """The tracked files and the built extension and init, in a fresh directory."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    built = [p.relative_to(REPO) for p in PACKAGE.glob("_native*.so")] + [pathlib.Path("sandboxlib/sbx-init")]
    assert len(built) == 2, built
    copy = tmp_path / "checkout"
    for rel in [pathlib.Path(f) for f in files.decode().split("\0") if f] + built:
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    return copy


IMPORT = ("import json, sys\n"
          "try:\n"
          "    import sandboxlib\n"
          "except ImportError as err:\n"
          "    print(json.dumps(['ImportError', str(err)]))\n"
          "else:\n"
          "    print(json.dumps(['ok', sandboxlib.__file__]))\n")


def _import_in(copy: pathlib.Path) -> list:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, cwd=str(copy.parent),
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fresh_copy_imports(checkout_copy):
    assert _import_in(checkout_copy) == ["ok", str(checkout_copy / "sandboxlib" / "__init__.py")]


@pytest.mark.parametrize("source", ["csrc/mounts.c", "csrc/sbx.h", "csrc/native.cdef"])
def test_stale_extension_is_refused(checkout_copy, source):
    with open(checkout_copy / source, "a") as f:
        f.write("\n/* changed after the build */\n")
    kind, message = _import_in(checkout_copy)
    assert kind == "ImportError", message
    assert "stale" in message and "make build" in message, message


def test_missing_init_is_refused(checkout_copy):
    (checkout_copy / "sandboxlib" / "sbx-init").unlink()
    kind, message = _import_in(checkout_copy)
    assert kind == "ImportError" and "sbx-init" in message and "make build" in message, message


# -- keyword-only options --------------------------------------------------------------------------
# The parameters that may be given by position; every other one is keyword-only.
POSITIONAL = {
    "sandboxlib.run": (sb.run, ["argv"]),
    "Container.__init__": (Container.__init__, ["self", "config"]),
    "Container.run": (Container.run, ["self", "argv"]),
    "Container.spawn": (Container.spawn, ["self", "argv"]),
    "Mount.bind": (Mount.bind, ["source", "target"]),
    "Mount.tmpfs": (Mount.tmpfs, ["target"]),
    "Container.invoke": (Container.invoke, ["self", "fn", "args", "kwargs"]),
    "Pool.__init__": (sb.Pool.__init__, ["self", "size"]),
}


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_options_are_keyword_only(name):
    func, positional = POSITIONAL[name]
    params = list(inspect.signature(func).parameters.values())
    assert [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY] == positional, params
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[:len(positional)])
    assert len(params) > len(positional)  # it has options, and all of them are keyword-only
