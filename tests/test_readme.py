"""README.md as a test: every ```python and ```sh block runs, in README order,
as written, so the examples never rot (issue 12's "README as a test", issue 10's
"every README example still runs").

Each block runs in a fresh process in one temporary working directory, as a
reader pasting them would: a python block with the README's ``import
sandboxlib as sb`` carried over from the first one; a block that defines
``test_`` functions as a pytest file (the plugin named with ``-p``); an sh
block with ``bash -e``, where ``sandboxlib`` is ``python -m sandboxlib`` (a
shim on PATH: the console script is not installed when testing the
checkout).  The image store the README uses (``sb.ImageStore()``'s default)
is redirected by ``SANDBOXLIB_HOME`` to the temporary directory, which holds
what the examples name (``./rootfs``, ``./data``, ``profile.json``,
``app.tar``, ``rootfs.tar.gz`` and the image ``app:1``).  A block that
cannot run here is marked by an HTML comment ``<!-- not run: why -->`` right
before it; the marked ones are listed below, so a new one is a deliberate
change of this file.  Root only: the README's examples are root's."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

import sandboxlib as sb
from tests.conftest import _remove, make_busybox_rootfs

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN_MARK = re.compile(r"<!-- not run: ([^>]+) -->\n$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PRELUDE = "import sandboxlib as sb\n"

# How each block marked not run begins, and why it cannot run in a test.
NOT_RUN = {
    "make demo ": "installs Debian packages, builds and installs the wheel",
    "pip install .": "installs packages",
    "sandboxlib run [--rootfs DIR]": "the command line's synopsis, not commands",
    'img = store.pull("localhost:5000/': "registries on localhost:5000 and reg.example.com",
    "sandboxlib images | load -i FILE": "the image commands' synopsis, not commands",
    'import sandboxlib as sb\n\nsb.run(["wget", "-qO-", "http://example.com/"], network="bridge")': (
        "a bridge network changes the host's network (tests/test_network*.py run it in namespaces of their own)"
    ),
    "sandboxlib run --network bridge -p": "the same, on the command line",
    "import ray\n": "starts a Ray instance (tests/test_ray.py runs the same on loopback)",
}


def readme_blocks() -> list:
    """(language, line number, code, not-run reason or None) of every ```python and ```sh block."""
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        language, code = match.group(1), match.group(2)
        if language not in ("python", "sh"):
            continue
        mark = NOT_RUN_MARK.search(text, 0, match.start())
        reason = mark.group(1) if mark and mark.end() == match.start() else None
        blocks.append((language, text.count("\n", 0, match.start()) + 1, code, reason))
    return blocks


def test_only_the_listed_blocks_are_marked_not_run():
    blocks = readme_blocks()
    marked = [code for _, _, code, reason in blocks if reason]
    assert sorted(prefix for prefix in NOT_RUN for code in marked if code.startswith(prefix)) == sorted(NOT_RUN)
    assert len(marked) == len(NOT_RUN)
    assert {language for language, _, _, reason in blocks if not reason} == {"python", "sh"}


def make_app_image(store: sb.ImageStore, work: str) -> None:
    """app:1, the README's image: busybox with /app/index.html and /etc/os-release."""
    app = make_busybox_rootfs(os.path.join(work, ".app-root"))
    os.makedirs(os.path.join(app, "app"))
    with open(os.path.join(app, "app", "index.html"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(app, "etc", "os-release"), "w") as f:
        f.write('NAME="busybox"\n')
    store.from_directory(app, "app:1", config={"Cmd": ["cat", "/etc/os-release"], "Env": ["PATH=/bin"]})
    shutil.rmtree(app)


def set_up(base: str) -> dict:
    """The working directory's files, the store's app:1, and the environment of every block."""
    work, home, bin_dir = (os.path.join(base, name) for name in ("work", "home", "bin"))
    for path in (work, bin_dir):
        os.makedirs(path)
    make_busybox_rootfs(os.path.join(work, "rootfs"))
    for mount_point in ("data", "scratch"):  # as the README says: a user namespace's root cannot make them
        os.makedirs(os.path.join(work, "rootfs", mount_point))
    os.makedirs(os.path.join(work, "data"))
    with open(os.path.join(work, "data", "report.txt"), "w") as f:
        f.write("data\n")
    docker_default = os.path.join(os.path.dirname(sb.__file__), "security", "data", "seccomp-default.json")
    shutil.copy(docker_default, os.path.join(work, "profile.json"))
    with tarfile.open(os.path.join(work, "rootfs.tar.gz"), "w:gz") as tar:
        for name in sorted(os.listdir(os.path.join(work, "rootfs"))):
            tar.add(os.path.join(work, "rootfs", name), arcname=name)
    store = sb.ImageStore(home)
    make_app_image(store, work)
    store.save(["app:1"], os.path.join(work, "app.tar"))
    shim = os.path.join(bin_dir, "sandboxlib")
    with open(shim, "w") as f:
        f.write(f'#!/bin/sh\nexec {sys.executable} -m sandboxlib "$@"\n')
    os.chmod(shim, 0o755)
    env = dict(os.environ, SANDBOXLIB_HOME=home, PATH=f"{bin_dir}:{os.environ['PATH']}")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the pytest block names the plugin (installed: no second copy)
    return {"cwd": work, "env": env}


def command_of(language: str, line: int, code: str, work: str) -> list:
    if language == "sh":
        return ["bash", "-e", "-c", code]
    if re.search(r"^def test_", code, re.MULTILINE):
        directory = os.path.join(work, f"readme_tests_{line}")
        os.makedirs(directory)
        with open(os.path.join(directory, f"test_readme_{line}.py"), "w") as f:
            f.write(code)
        pytest_args = ["-p", "no:cacheprovider", "-p", "sandboxlib.frontends.pytest_plugin", "-q", directory]
        return [sys.executable, "-m", "pytest", *pytest_args]
    return [sys.executable, "-c", PRELUDE + code]


@pytest.fixture
def readme_dir():
    base = tempfile.mkdtemp(prefix="sandboxlib-readme-")
    os.chmod(base, 0o755)  # as root, the containers' root is an unprivileged id: it reads ./data, ./rootfs
    yield base
    _remove(base)


def test_every_unmarked_readme_block_runs(readme_dir):
    assert os.geteuid() == 0, "the README's examples are root's"
    how = set_up(readme_dir)
    ran = []
    for language, line, code, reason in readme_blocks():
        if reason:
            continue
        proc = subprocess.run(
            command_of(language, line, code, how["cwd"]),
            **how,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"README.md:{line} ({language}) failed:\n{proc.stdout}\n{proc.stderr}"
        ran.append(line)
    unmarked = [line for _, line, _, reason in readme_blocks() if not reason]
    assert ran == unmarked and len(ran) == 9  # 6 python (one a pytest file, one asyncio, one Dask), 3 sh
