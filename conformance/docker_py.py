"""`make conformance`, docker-py's part: the integration suite of the
docker/docker-py repository (``tests/integration/``, at a pinned commit, with
that commit's own ``docker`` package) against a private dockerd and against
``sandboxlib daemon``, one after the other in one run.

    python conformance/docker_py.py --source DOCKER_PY_GIT_DIR [--work DIR] [--timeout S] [-k EXPR]
        [--only dockerd|sandboxlib] [--file NAME_test.py ...]

Everything runs in a network namespace of its own (the script re-enters
itself through ``unshare --net``): the networks the suite creates, the
daemons' bridges and port bindings never touch the machine's network, and
go with the namespace.  dockerd runs as tests/dockerd.py starts it (own data
and exec roots, pidfile and socket, ``--bridge none``, no iptables rules);
ours as tests/daemonkit.py does, with no default network either.  The suite
wants ``alpine:3.10``, ``alpine:latest`` and ``busybox:latest``: made here
from Debian's busybox-static (no internet) and loaded into both daemons.

Prints each daemon's pass count, the wall time of each run, and the tests
that pass on dockerd and fail on ours; exits 1 if one of those is not
listed in conformance/DOCKER_PY.md.  Swarm, services, secrets, configs,
plugins and nodes are not run (the issue leaves them out): their files are
deselected and listed there.  JUnit XML of each run in WORK/.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
COMMIT = "afc6d1ee308e78b908b96a94298c37fa8c465588"  # docker-py main, 2026-07-10 (merge of #3420)
# The suite's own imports (tests/helpers.py imports paramiko), pinned.
SUITE_PACKAGES = ["pytest==9.0.3", "pytest-timeout==2.4.0", "paramiko==5.1.0", "requests==2.34.2", "urllib3==2.8.0"]
# dockerd 20.10 speaks API 1.41 at most; the suite's default (1.45) would be refused by it.
API_VERSION = "1.41"
IMAGE_TAGS = ["alpine:3.10", "alpine:latest", "busybox:latest"]
BUSYBOX = "/bin/busybox"
EXCLUDED_FILES = [
    "api_swarm_test.py",
    "api_service_test.py",
    "api_secret_test.py",
    "api_config_test.py",
    "api_plugin_test.py",
    "models_swarm_test.py",
    "models_services_test.py",
    "models_nodes_test.py",
]
NETNS_MARK = "SANDBOXLIB_CONFORMANCE_NETNS"
PR_SET_PDEATHSIG = 1


def extract(source: str, work: str) -> str:
    tree = os.path.join(work, "docker-py")
    stamp = os.path.join(tree, ".commit")
    if not os.path.exists(stamp) or open(stamp).read() != COMMIT:
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(tree)
        archive = subprocess.Popen(["git", "--git-dir", source, "archive", COMMIT], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tree], stdin=archive.stdout, check=True)
        if archive.wait():
            raise SystemExit(f"git archive {COMMIT} of {source} failed")
        # hatch-vcs writes docker/_version.py at build time; the suite imports it from the tree
        with open(os.path.join(tree, "docker", "_version.py"), "w") as f:
            f.write('__version__ = "0.0.0+conformance"\n')
        with open(stamp, "w") as f:
            f.write(COMMIT)
    return tree


def suite_python(work: str) -> str:
    venv = os.path.join(work, "docker-py-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".ready")):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *SUITE_PACKAGES], check=True)
        open(os.path.join(venv, ".ready"), "w").close()
    return python


def _add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    tar.addfile(info, io.BytesIO(data) if data else None)


def busybox_layer() -> bytes:
    """A root of Debian's static busybox and its applets, /etc/passwd and group."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "root", "home", "proc", "dev", "sys", "run", "var", "usr", "usr/bin", "sbin"):
            _add(tar, d, tarfile.DIRTYPE, 0o755)
        _add(tar, "tmp", tarfile.DIRTYPE, 0o1777)
        with open(BUSYBOX, "rb") as f:
            _add(tar, "bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for name in sorted(set(applets) - {"busybox"}):
            _add(tar, f"bin/{name}", tarfile.SYMTYPE, 0o777, link="busybox")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        _add(tar, "etc/passwd", tarfile.REGTYPE, 0o644, passwd)
        _add(tar, "etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def image_archive(path: str) -> None:
    """A `docker save` archive of one busybox image tagged as the suite expects."""
    import hashlib

    layer = busybox_layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "conformance/docker_py.py: busybox-static"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": IMAGE_TAGS, "Layers": ["layer/layer.tar"]}]
    with tarfile.open(path, "w") as tar:
        _add(tar, "layer", tarfile.DIRTYPE, 0o755)
        _add(tar, "layer/layer.tar", tarfile.REGTYPE, 0o644, layer)
        _add(tar, config_name, tarfile.REGTYPE, 0o644, config_bytes)
        _add(tar, "manifest.json", tarfile.REGTYPE, 0o644, json.dumps(manifest).encode())


def suite_files(tree: str, only: List[str]) -> List[str]:
    """The suite's files but the excluded ones, credentials/ last: its utils_test rebinds
    ``os.environ`` for good (``os.environ = base``), losing DOCKER_HOST for every later test.
    With ``only``, just those files (names as in tests/integration/)."""
    names = sorted(n for n in os.listdir(os.path.join(tree, "tests", "integration")) if n.endswith("_test.py"))
    if only:
        unknown = sorted(set(only) - set(names) - {"credentials"})
        if unknown:
            raise SystemExit(f"--file: no such file in tests/integration/: {', '.join(unknown)}")
        return [f"tests/integration/{n}" for n in [*names, "credentials"] if n in only]
    return [f"tests/integration/{n}" for n in names if n not in EXCLUDED_FILES] + ["tests/integration/credentials"]


def run_suite(python: str, tree: str, host: str, out: str, timeout: int, select: str, only: List[str]) -> float:
    """pytest over tests/integration against ``host``; JUnit XML to ``out``; wall seconds."""
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_TEST_API_VERSION=API_VERSION, PYTHONPATH=tree)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        env.pop(name, None)
    # a config.json of its own: without one, docker-py keeps its contexts in the working directory
    env["DOCKER_CONFIG"] = tempfile.mkdtemp(prefix="docker-config-")
    with open(os.path.join(env["DOCKER_CONFIG"], "config.json"), "w") as f:
        f.write("{}\n")
    argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", str(timeout)]
    argv += ["-o", "addopts=", "--junit-xml", out, *suite_files(tree, only)]
    if select:
        argv += ["-k", select]
    started = time.monotonic()
    subprocess.run(argv, cwd=tree, env=env)
    shutil.rmtree(env["DOCKER_CONFIG"], ignore_errors=True)
    return time.monotonic() - started


def outcomes(junit: str) -> Dict[str, str]:
    """test id (file::Class::name) -> passed, failed, error or skipped."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        module, _, cls = path.rpartition("/")
        test = f"{os.path.basename(module)}.py::{cls}::{case.get('name')}"
        kinds = [child.tag for child in case]
        found[test] = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        found[test] = {"failure": "failed"}.get(found[test], found[test])
    return found


def listed() -> Dict[str, str]:
    """The failures conformance/DOCKER_PY.md lists: test -> reason."""
    found = {}
    with open(os.path.join(HERE, "DOCKER_PY.md")) as f:
        for line in f:
            m = re.match(r"^\| `([^`]+)` \| (.*) \|$", line.strip())
            if m:
                found[m.group(1)] = m.group(2)
    return found


def in_own_network() -> None:
    """Re-run this script in a new network namespace (loopback up), unless it is in one already.

    Nothing outlives the run: the re-run gets SIGTERM when this process dies,
    and turns it (and SIGINT) into an exit that stops both daemons; each daemon
    gets SIGTERM when the re-run dies (dockerd from tests/dockerd.py, ours from
    ``setpriv --pdeathsig``)."""
    if os.environ.get(NETNS_MARK):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        return
    env = dict(os.environ, **{NETNS_MARK: "1"})
    argv = ["unshare", "--net", "--", sys.executable, *sys.argv]
    sys.exit(subprocess.run(argv, env=env, preexec_fn=_terminated_with_parent).returncode)


def _terminated_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True, help="a git directory of docker/docker-py")
    parser.add_argument("--work", default="build/conformance")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test")
    parser.add_argument("-k", dest="select", default="", help="only the tests pytest -k selects")
    parser.add_argument("--only", choices=("dockerd", "sandboxlib"), help="run against one daemon only")
    parser.add_argument(
        "--file", dest="files", action="append", default=[], help="only this file of tests/integration/ (repeatable)"
    )
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    tree = extract(os.path.abspath(args.source), work)
    python = suite_python(work)  # pip needs the machine's network: before entering our own
    in_own_network()
    sys.path.append(CHECKOUT)  # tests/ for its daemon starters; sandboxlib is the installed one
    from tests.daemonkit import DOCKER, Daemon
    from tests.dockerd import Dockerd

    top = tempfile.mkdtemp(prefix="conformance-docker-py-")
    os.chmod(top, 0o755)
    archive = os.path.join(top, "images.tar")
    image_archive(archive)
    results: Dict[str, Dict[str, str]] = {}
    walls: Dict[str, float] = {}
    try:
        for name in ("dockerd", "sandboxlib"):
            if args.only and args.only != name:
                continue
            if name == "dockerd":
                daemon = Dockerd(os.path.join(top, "dockerd"))
                log = os.path.join(top, "dockerd", "dockerd.log")
            else:
                os.makedirs(os.path.join(top, "ours"))
                ours = os.path.join(top, "ours")
                daemon = Daemon(ours, os.path.join(ours, "store"), prefix=["setpriv", "--pdeathsig", "TERM", "--"])
                log = daemon.log_path
            try:
                subprocess.run([DOCKER, "load", "-q", "-i", archive], env=daemon.env, check=True, capture_output=True)
                junit = os.path.join(work, f"docker-py-{name}.xml")
                walls[name] = run_suite(
                    python, tree, daemon.env["DOCKER_HOST"], junit, args.timeout, args.select, args.files
                )
                results[name] = outcomes(junit)
            finally:
                shutil.copy(log, os.path.join(work, f"docker-py-{name}-daemon.log"))
                daemon.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)
    report(results, walls)


def report(results: Dict[str, Dict[str, str]], walls: Dict[str, float]) -> None:
    for name, found in results.items():
        counts = {k: sum(1 for v in found.values() if v == k) for k in ("passed", "failed", "error", "skipped")}
        print(
            f"{name}: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
            f"{counts['skipped']} skipped of {len(found)} in {walls[name]:.0f} s"
        )
    if len(results) < 2:
        return
    ours, theirs = results["sandboxlib"], results["dockerd"]
    missing: List[str] = sorted(t for t, v in theirs.items() if v == "passed" and ours.get(t) != "passed")
    print(f"passing on dockerd, failing on sandboxlib ({len(missing)}):")
    known = listed()
    for test in missing:
        print(f"  {test}" + (f"  [{known[test]}]" if test in known else "  [NOT LISTED]"))
    unlisted = [t for t in missing if t not in known]
    if unlisted:
        print(f"{len(unlisted)} of them not listed in conformance/DOCKER_PY.md", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
