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

# The package map of docs/architecture.md: each unit (a top-level module or a
# sub-package) may import units of its own layer and below, never above.
LAYERS = {
    "errors": 0,
    "streams": 0,
    "results": 0,
    "posix": 0,
    "version": 0,
    "native": 1,
    "security": 2,
    "config": 3,
    "cgroups": 4,
    "images": 4,
    "network": 4,
    "rootfs": 5,
    "registry": 5,
    "calls": 6,
    "runtime": 7,
    "oci": 7,
    "api": 8,
    "aio": 8,
    "build": 8,
    "pool": 9,
    "daemon": 9,
    "frontends": 10,
    "dask": 10,
    "ray": 10,
    "__init__": 11,
    "__main__": 11,
}
FRONT_ENDS = "frontends"
NATIVE = "sandboxlib.native._native"
BINDING = "sandboxlib.native.binding"


def _module_files(package: pathlib.Path = PACKAGE) -> dict:
    """Dotted module name -> its file (a package's name -> its __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = ("sandboxlib",) + path.relative_to(package).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, tree: ast.AST, modules, is_package: bool = False) -> set:
    """The sandboxlib modules that module ``name`` imports anywhere (inside
    functions too), the package faces that importing them runs, and the
    extension (also through importlib)."""
    own = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = (
                (node.module or "").split(".")
                if node.level == 0
                else own[: len(own) - node.level + 1] + ([node.module] if node.module else [])
            )
            base_name = ".".join(p for p in base if p)
            if base_name.split(".")[0] != "sandboxlib":
                continue
            for alias in node.names:
                sub = f"{base_name}.{alias.name}"
                targets.append(sub if sub in modules or sub == NATIVE else base_name)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "sandboxlib"]
        elif isinstance(node, ast.Call):
            targets = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and a.value.startswith("sandboxlib.")
                and a.value.endswith("_native")
            ]
        for target in targets:
            found.add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):  # the package faces its import runs first
                face = ".".join(parts[:i])
                if not name.startswith(face + ".") and name != face:
                    found.add(face)
    found.discard("sandboxlib")  # the face: always imported first, by Python itself
    found.discard(name)
    return found


def _graph() -> dict:
    modules = _module_files()
    return {
        name: _imports(name, ast.parse(path.read_text(), str(path)), modules, path.name == "__init__.py")
        for name, path in modules.items()
    }


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_every_unit_has_a_layer():
    assert sorted({_unit(m) for m in _module_files()}) == sorted(LAYERS), (
        "add the new module or package to LAYERS (and docs/architecture.md)"
    )


def test_only_the_binding_imports_native():
    assert sorted(m for m, targets in _graph().items() if NATIVE in targets) == [BINDING]


def test_lib_and_ffi_stay_in_the_native_package():
    """cffi objects (``lib``, ``ffi``) serve the native package only: others get constants and functions."""
    leaks = []
    for name, path in _module_files().items():
        if _unit(name) == "native":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("lib", "ffi") and isinstance(node.value, ast.Name):
                leaks.append(f"{name}: {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and "native" in (node.module or ""):
                leaks += [f"{name}: imports {a.name}" for a in node.names if a.name in ("lib", "ffi")]
    assert leaks == []


def test_no_upward_imports():
    upward = [
        f"{m} (layer {LAYERS[_unit(m)]}) imports {t} (layer {LAYERS[_unit(t)]})"
        for m, targets in _graph().items()
        for t in targets - {NATIVE}
        if LAYERS[_unit(t)] > LAYERS[_unit(m)]
    ]
    assert upward == []


def test_no_import_cycles():
    assert _cycle(_graph()) is None


def test_front_ends_use_the_public_api_only():
    """Front ends import top-level modules and package faces, never a module inside a package."""
    private = [
        f"{m} imports {t}"
        for m, targets in _graph().items()
        if _unit(m) == FRONT_ENDS
        for t in targets
        if t.count(".") > 1 and _unit(t) != FRONT_ENDS
    ]
    assert private == []


def test_import_scanner_sees_imports():
    """The scanner finds every form of import, and the cycle finder finds cycles (or the tests above
    prove nothing)."""
    modules = {"sandboxlib.a", "sandboxlib.b", "sandboxlib.pkg", "sandboxlib.pkg.c", "sandboxlib.pkg.d"}
    code = (
        "from ..a import x\nfrom .. import b\nfrom .d import y\nimport sandboxlib.e\n"
        "from sandboxlib import f\nfrom sandboxlib.g.h import z\nimport os\n"
        "def f():\n    from ..native import _native\n    import importlib\n"
        "    importlib.import_module('sandboxlib.native._native')\n"
    )
    found = _imports("sandboxlib.pkg.c", ast.parse(code), modules)
    assert found == {
        "sandboxlib.a",
        "sandboxlib.b",
        "sandboxlib.pkg.d",
        "sandboxlib.e",
        "sandboxlib.g.h",
        "sandboxlib.g",
        NATIVE,
        "sandboxlib.native",
    }
    assert _cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert _cycle({"x": {"y"}, "y": set()}) is None


def test_layers_match_the_architecture_document():
    text = (REPO / "docs" / "architecture.md").read_text()
    documented = {}
    for row in text.splitlines():
        cell = row.split("|")[1].strip() if row.startswith("| ") else ""
        layer, _, names = cell.partition(" ")
        if layer.isdigit() and "`" in names:
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
    **{
        f"ImageStore.{name}": getattr(sb.ImageStore, name)
        for name in (
            "__init__",
            "list",
            "get",
            "tag",
            "remove",
            "prune",
            "load",
            "import_rootfs",
            "from_directory",
            "save",
            "unpacked",
            "volume",
            "volumes",
            "remove_volume",
            "pull",
            "push",
        )
    },
    **{
        f"Container.{name}": getattr(Container, name)
        for name in ("write_file", "read_file", "put_archive", "get_archive", "commit")
    },
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
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
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
HEAVY = (
    "asyncio",
    "multiprocessing",
    "concurrent.futures",
    "ssl",
    "http.client",
    "email",
    "urllib.request",
    "xml.etree.ElementTree",
    "unittest",
    "ctypes",
    "argparse",
    "psutil",
    "pytest",
    "sandboxlib.frontends.cli",
    "IPython",
    "sandboxlib.frontends.magic",
    "sandboxlib.pool",
    "cloudpickle",
)


def test_import_is_light():
    code = (
        "import json, sys\nbefore = set(sys.modules)\nimport sandboxlib\n"
        "bare = sorted(set(sys.modules) - before)\nsandboxlib.Container, sandboxlib.run\n"
        "print(json.dumps([bare, sorted(set(sys.modules) - before)]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    bare, used = json.loads(proc.stdout)
    # The face's names are imported on first use (the OCI runtime's start-up).
    assert not [m for m in bare if m.startswith(("sandboxlib.runtime", "sandboxlib.native"))], bare
    loaded = set(used)
    assert "sandboxlib.runtime.container" in loaded  # the measure works
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"import sandboxlib loads {heavy}"


# -- a stale extension ------------------------------------------------------------------------------
@pytest.fixture
def checkout_copy(tmp_path):
    """The tracked files and the built extension and init (those of the tested
    package: the wheel's or the in-place build), in a fresh directory."""
    import sandboxlib

    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tested = pathlib.Path(sandboxlib.__file__).parent / "native"
    built = [*tested.glob("_native*.so"), tested / "sbx-init"]
    assert len(built) == 2 and all(p.is_file() for p in built), built
    copy = tmp_path / "checkout"
    for rel in [pathlib.Path(f) for f in files.decode().split("\0") if f]:
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    for path in built:
        shutil.copy2(path, copy / "sandboxlib" / "native" / path.name)
    return copy


IMPORT = (
    "import json, sys\n"
    "try:\n"
    "    import sandboxlib\n"
    "    sandboxlib.Container  # (the face's names are imported on first use)\n"
    "except ImportError as err:\n"
    "    print(json.dumps(['ImportError', str(err)]))\n"
    "else:\n"
    "    print(json.dumps(['ok', sandboxlib.__file__]))\n"
)


def _import_in(copy: pathlib.Path) -> list:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT], capture_output=True, text=True, cwd=str(copy.parent), env=env, timeout=60
    )
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
    (checkout_copy / "sandboxlib" / "native" / "sbx-init").unlink()
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
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[: len(positional)])
    assert len(params) > len(positional)  # it has options, and all of them are keyword-only
