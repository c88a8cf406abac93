"""`make conformance`: opencontainers/runtime-tools' validation tests against
sandboxlib-runtime, runc and crun, in one run.

    python conformance/run.py --source RUNTIME_TOOLS_GIT_DIR --runtime PATH [--work DIR]

Builds the validation executables and a static ``runtimetest`` from the
repository's source (``git archive`` of the pinned commit, its vendor/
directory, Debian's Go with conformance/go119-compat.sh), runs every test
for each runtime (TAP output kept in WORK/out-NAME/), prints a table of
ok / not ok per test and runtime (a test passes when no point is "not ok",
it exits 0, and, if it has no points, it reports no error: see score()), and checks sandboxlib-runtime's results
against conformance/EXCLUSIONS.md: a test passing for runc must pass for
sandboxlib-runtime unless the list names it.  Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
COMMIT = "5e639034dcdc2422164e3d7d76a737e2fb451a67"  # runtime-tools main (merge of #784, time namespaces)
GO_ENV = {"GOFLAGS": "-mod=vendor", "GOPROXY": "off", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
NS_MARK = "SBX_CONFORMANCE_PRIVATE_MOUNT_NS"


def enter_private_mount_ns() -> None:
    """Re-execute in a private mount namespace whose /dev/null and the others
    are nodes of its own (benchmarks/devnodes.py says why: crun chowns the
    ones it binds into a user namespace's container)."""
    if os.environ.get(NS_MARK) != "1":
        argv = ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv]
        os.execvpe("unshare", argv, dict(os.environ, **{NS_MARK: "1"}))
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    import devnodes

    devnodes.bind_private_devices()


def build(source: str, work: str) -> str:
    tree = os.path.join(work, "runtime-tools")
    if not os.path.exists(os.path.join(tree, "runtimetest")):
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(tree)
        archive = subprocess.Popen(["git", "--git-dir", source, "archive", COMMIT], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tree], stdin=archive.stdout, check=True)
        archive.wait()
        subprocess.run([os.path.join(HERE, "go119-compat.sh"), tree], check=True)
        env = dict(os.environ, **GO_ENV)
        static = ["-tags", "netgo osusergo", "-ldflags", "-extldflags -static"]
        subprocess.run(
            ["go", "build", *static, "-o", "runtimetest", "./cmd/runtimetest"], cwd=tree, env=env, check=True
        )
        for name in sorted(os.listdir(os.path.join(tree, "validation"))):
            if os.path.isfile(os.path.join(tree, "validation", name, f"{name}.go")):
                out = os.path.join("validation", name, f"{name}.t")
                subprocess.run(["go", "build", "-o", out, f"./validation/{name}"], cwd=tree, env=env, check=True)
    return tree


def tests(tree: str):
    for name in sorted(os.listdir(os.path.join(tree, "validation"))):
        path = os.path.join(tree, "validation", name, f"{name}.t")
        if os.path.exists(path):
            yield name, path


def score(text: str, status: int) -> Tuple[int, int]:
    """(ok, not ok) of one test's TAP output and exit status.  Besides its
    'not ok' points, a test fails when it exits non-zero (util.Fatal: before
    any point, or after all of them, as the *_fail tests do when the runtime
    accepted what it must refuse), and a test without points fails when it
    reports an error diagnostic (the lifecycle tests: prestart, poststop, ..);
    without points, exiting 0 and reporting nothing, it passed."""
    ok = len(re.findall(r"^ok ", text, re.M))
    bad = len(re.findall(r"^not ok ", text, re.M))
    if not bad and (status or (not ok and re.search(r'^\s*"error": ', text, re.M))):
        bad = 1
    return ok, bad


def run_all(tree: str, runtime: str, out: str) -> Dict[str, Tuple[int, int, str]]:
    """test -> (ok, not ok, first problem)."""
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "tmp")
    os.makedirs(tmp, exist_ok=True)
    results = {}
    for name, path in tests(tree):
        env = dict(os.environ, RUNTIME=runtime, TMPDIR=tmp)  # the tests' bundles (some are left behind)
        try:
            proc = subprocess.run([path], cwd=tree, env=env, capture_output=True, text=True, timeout=120)
            text, status = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired:
            text, status = "not ok - timed out after 120 s\n", -1
        with open(os.path.join(out, f"{name}.tap"), "w") as f:
            f.write(f"{text}\n# exit status {status}\n")
        ok, bad = score(text, status)
        problem = "" if ok or bad else (text.strip().splitlines() or ["no output"])[-1][:100]
        results[name] = (ok, bad, problem)
        print(f"{os.path.basename(runtime)}: {name}: {ok} ok, {bad} not ok", file=sys.stderr)
    return results


def clean_up(runtime: str, work: str) -> None:
    """What the tests leave: containers some do not delete (in the runtime's
    default root), the cgroup parents of their absolute cgroupsPaths, and
    the mounts that a shared rootfsPropagation (runc's, crun's) propagated
    back into the bundles in WORK (seen here: /dev, /proc, /sys of three)."""
    with open("/proc/self/mountinfo") as f:
        points = sorted({line.split()[4] for line in f if line.split()[4].startswith(work + "/")}, key=len)
    for point in points:
        subprocess.run(["umount", "--recursive", "--lazy", point], capture_output=True)
    ids = subprocess.run([runtime, "list", "--quiet"], capture_output=True, text=True).stdout.split()
    for container_id in ids:
        subprocess.run([runtime, "delete", "--force", container_id], capture_output=True)
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        for name in ("cgrouptest", "testdir"):
            top = os.path.join("/sys/fs/cgroup", hierarchy, name)
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def exclusions() -> Dict[str, str]:
    found = {}
    with open(os.path.join(HERE, "EXCLUSIONS.md")) as f:
        for line in f:
            m = re.match(r"^\| `(\w+)` \| (.*) \|$", line.strip())
            if m:
                found[m.group(1)] = m.group(2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True, help="a git directory of opencontainers/runtime-tools")
    parser.add_argument("--runtime", required=True, help="the sandboxlib-runtime executable")
    parser.add_argument("--work", default="build/conformance")
    args = parser.parse_args()
    enter_private_mount_ns()
    work = os.path.abspath(args.work)
    tree = build(args.source, work)
    runtimes = {"sandboxlib-runtime": os.path.abspath(args.runtime)}
    runtimes.update({n: p for n in ("runc", "crun") if (p := shutil.which(n))})
    results = {name: run_all(tree, path, os.path.join(work, f"out-{name}")) for name, path in runtimes.items()}
    clean_up(runtimes["sandboxlib-runtime"], work)
    names = list(runtimes)
    print("| test | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for test, _ in tests(tree):
        cells = [f"{results[n][test][0]} ok / {results[n][test][1]} not ok" for n in names]
        print(f"| `{test}` | " + " | ".join(cells) + " |")
    excluded = exclusions()
    missing = [
        t
        for t, _ in tests(tree)
        if "runc" in results
        and results["runc"][t][1] == 0
        and results["sandboxlib-runtime"][t][1] > 0
        and t not in excluded
    ]
    if missing:
        print(f"passing for runc, failing here and not excluded: {missing}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
