"""The suite tests what users install: `make test` builds the wheel, installs
it into a fresh venv and names that venv in SANDBOXLIB_EXPECT_INSTALLED; then
the sandboxlib imported here, in subprocesses and in the rootless workers is
the venv's, and it has every package, data file and built part of the
checkout.  With SANDBOXLIB_DEV=1 (the checkout built in place) the same tests
check that the checkout is what is imported (tests/conftest.py refuses a run
that says neither)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import sandboxlib

from . import rootless

SOURCE = pathlib.Path(rootless.REPO) / "sandboxlib"


def expected_package_dir() -> pathlib.Path:
    """Where the tested sandboxlib must be: the venv's site-packages, or the checkout."""
    venv = os.environ.get(rootless.INSTALLED_VAR)
    if not venv:
        return SOURCE
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return pathlib.Path(venv).resolve() / "lib" / version / "site-packages" / "sandboxlib"


def package_location() -> str:
    import sandboxlib

    return os.path.realpath(sandboxlib.__file__)


def test_the_tested_sandboxlib_is_the_expected_one():
    assert pathlib.Path(package_location()) == expected_package_dir() / "__init__.py"
    if os.environ.get(rootless.INSTALLED_VAR):  # the venv's interpreter runs the suite
        assert pathlib.Path(sys.prefix).resolve() == pathlib.Path(os.environ[rootless.INSTALLED_VAR]).resolve()
        assert rootless.REPO not in map(os.path.realpath, sys.path), "the checkout is importable"
        script = pathlib.Path(sys.prefix) / "bin" / "sandboxlib"  # the console script
        proc = subprocess.run([str(script), "run", "--", "echo", "hi"], capture_output=True, cwd="/", timeout=60)
        assert (proc.returncode, proc.stdout) == (0, b"hi\n"), proc


def test_subprocesses_and_rootless_workers_use_the_same_sandboxlib(runner):
    code = "import os, sandboxlib; print(os.path.realpath(sandboxlib.__file__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == package_location()
    assert runner(package_location) == package_location()


def _package_dirs(top: pathlib.Path) -> set:
    return {str(p.parent.relative_to(top)) for p in top.rglob("__init__.py") if "__pycache__" not in p.parts}


def test_every_part_of_the_checkout_is_in_the_tested_package():
    """Every package directory of sandboxlib/ (the ones with an __init__.py),
    every module and data file, the extension and sbx-init."""
    tested = pathlib.Path(sandboxlib.__file__).resolve().parent
    assert _package_dirs(SOURCE) and _package_dirs(tested) == _package_dirs(SOURCE)
    source_files = {
        str(p.relative_to(SOURCE))
        for p in SOURCE.rglob("*")
        if p.is_file() and p.suffix in {".py", ".json", ".md"} and "__pycache__" not in p.parts
    }
    missing = sorted(f for f in source_files if not (tested / f).is_file())
    assert missing == [], f"not in the tested package: {missing}"
    assert len(list((tested / "native").glob("_native*.so"))) == 1
    assert os.access(tested / "native" / "sbx-init", os.X_OK)
    assert os.access(tested / "native" / "sbx-runtime", os.X_OK)


def test_the_runtime_command_is_the_c_front():
    """The wheel installs ``sandboxlib-runtime`` as the C front (csrc/front.c,
    a static program, also in the package) beside the console script it
    runs for the heavy verbs, ``sandboxlib-runtime-python``."""
    from tests.ocikit import runtime_command

    front = pathlib.Path(runtime_command()[0])
    built = pathlib.Path(sandboxlib.__file__).resolve().parent / "native" / "sbx-runtime"
    assert front.read_bytes()[:4] == b"\x7fELF" and front.read_bytes() == built.read_bytes()
    if os.environ.get(rootless.INSTALLED_VAR):
        assert front.parent == pathlib.Path(sys.prefix) / "bin"
        assert (front.parent / "sandboxlib-runtime-python").read_text().startswith(f"#!{front.parent}/python")
    proc = subprocess.run([str(front), "--version"], capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(b"sandboxlib-runtime version "), proc
