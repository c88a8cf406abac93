"""A ``@pytest.mark.sandbox`` test's run time, passing and failing (an
assertion's dict diff, so that pytest's report is made in the sandbox): pytest
sessions of marked tests in subprocesses, one session per plugin module each
round (in a fresh order), each test's time as pytest's JUnit XML gives it
(setup, call and teardown).

    python benchmarks/bench_pytest_marker.py [--rounds N] [--tests N] [--plugin MODULE ...] [--no-record]

``--plugin`` (repeatable) compares other versions of the plugin, importable
modules (e.g. an earlier copy on PYTHONPATH), side by side with the same tests.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import pytest

PLUGIN = "sandboxlib.frontends.pytest_plugin"

TEST = """
@pytest.mark.sandbox()
def test_passes_{n}():
    assert {{"a": 1, "b": 2}} == {{"a": 1, "b": 2}}


@pytest.mark.sandbox()
def test_fails_{n}():
    assert {{"a": 1, "b": 2}} == {{"a": 1, "b": 3}}
"""


def session(directory: str, plugin: str) -> dict:
    """One session's test times in seconds: {"passes": [...], "fails": [...]}."""
    report = os.path.join(directory, f"{plugin}.xml")
    args = ["-p", "no:cacheprovider", "-p", plugin, "-q", f"--junitxml={report}", directory]
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True, cwd=directory, env=env, timeout=600)
    times: dict = {"passes": [], "fails": []}
    for case in ET.parse(report).iter("testcase"):
        times[case.get("name").split("_")[1]].append(float(case.get("time")))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=10, help="marked tests of each kind in a session")
    parser.add_argument("--plugin", action="append", help=f"plugin modules to compare (default: {PLUGIN})")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    plugins = args.plugin or [PLUGIN]
    samples: dict = {(plugin, kind): [] for plugin in plugins for kind in ("passes", "fails")}
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)  # the project's directory: the container's root is another user
        with open(os.path.join(directory, "test_marked.py"), "w") as f:
            f.write("import pytest\n" + "".join(TEST.format(n=n) for n in range(args.tests)))
        session(directory, plugins[0])  # warm-up (page cache, the first pyc files)
        order, shuffle = list(plugins), random.Random(0).shuffle
        for _ in range(args.rounds):
            shuffle(order)
            for plugin in order:
                for kind, times in session(directory, plugin).items():
                    samples[plugin, kind].extend(times)
    first = {kind: _common.percentiles(samples[plugins[0], kind])[0] for kind in ("passes", "fails")}
    rows = [
        (
            f"{plugin}: a marked test that {kind}",
            _common.percentiles(v),
            f"{_common.percentiles(v)[0] / first[kind]:.2f}x",
        )
        for (plugin, kind), v in samples.items()
    ]
    body = (
        _common.table(rows) + f"\n\npytest {pytest.__version__}; {args.rounds} rounds of one session per plugin "
        f"({args.tests} marked tests of each kind); ratio: p50 against {plugins[0]}'s.  Load average at the end: "
        f"{os.getloadavg()[0]:.2f} (the benchmark's own load included)."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_pytest_marker: a marked test's run time", body)


if __name__ == "__main__":
    main()
