"""Pull progress: the library's callback (per-layer bytes done/total and
phases, in order), the CLI's plain lines when its output is not a terminal,
and its tqdm bars on a terminal (a pty)."""

from __future__ import annotations

import itertools
import sys
import urllib.request

import pexpect

import sandboxlib as sb
from sandboxlib.registry import Phase, Progress

from .conftest import sandboxlib_cli
from .test_registry import pushed, registry  # noqa: F401 (fixtures)
from .test_registry_transfer import layer_descriptors


def phases_of(events, digest) -> list:
    """The layer's phases, repeats folded."""
    return [phase.value for phase, _ in itertools.groupby(e.phase for e in events if e.digest == digest)]


def check_progress(path: str, ref: str) -> list:
    events = []
    sb.ImageStore(path).pull(ref, progress=events.append)
    return [(e.digest, e.phase, e.done, e.total) for e in events]


def test_callback_reports_each_layer_in_order(runner, store_dir, registry, pushed):
    ref, _ = pushed
    layers = layer_descriptors(registry, ref)
    events = [Progress(digest=d, phase=p, done=n, total=t) for d, p, n, t in runner(check_progress, store_dir, ref)]
    for digest, size in layers:
        assert phases_of(events, digest) == ["waiting", "downloading", "verifying", "done"]
        mine = [e for e in events if e.digest == digest]
        assert {e.total for e in mine} == {size}
        done = [e.done for e in mine]
        assert done[0] == 0 and done == sorted(done) and done[-1] == size
        assert [e.done for e in mine if e.phase is Phase.VERIFYING] == [size]
    assert {e.digest for e in events} == {digest for digest, _ in layers}  # the config is not a layer
    # (Phase.PRESENT: test_registry.py's test_layers_in_the_store_are_not_fetched)


def test_blob_left_in_the_store_is_checked_not_fetched(registry, pushed, tmp_path):
    ref, digest = pushed
    layer, size = layer_descriptors(registry, ref)[0]
    store = sb.ImageStore(str(tmp_path / "store"))
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    with urllib.request.urlopen(f"http://{registry.host}/v2/{repo}/blobs/{layer}", timeout=30) as answer:
        data = answer.read()
    with store.writing():  # as an interrupted pull leaves it: complete, unreferenced
        store.blobs.put_bytes(data, layer)
    events = []
    assert store.pull(ref, progress=events.append).digest == digest
    assert phases_of(events, layer) == ["waiting", "checking", "done"]


def test_cli_prints_plain_lines_when_not_a_terminal(registry, pushed, tmp_path):
    ref, digest = pushed
    layers = layer_descriptors(registry, ref)
    out = sandboxlib_cli("pull", "--store", str(tmp_path / "store"), ref, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for layer, _ in layers:
        short = layer[7:19]
        assert [line for line in lines if line.startswith(short)] == [
            f"{short}: waiting",
            f"{short}: downloading",
            f"{short}: verifying",
            f"{short}: done",
        ]
    assert lines[-2:] == [f"Digest: {ref.rsplit(':', 1)[0]}@{digest}", f"Pulled: {ref}"]
    quiet = sandboxlib_cli("pull", "-q", "--store", str(tmp_path / "quiet"), ref, text=True)
    assert (quiet.returncode, quiet.stdout) == (0, digest + "\n")


def test_cli_draws_bars_on_a_terminal(registry, pushed, tmp_path):
    ref, _ = pushed
    layers = layer_descriptors(registry, ref)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sandboxlib", "pull", "--store", str(tmp_path / "store"), ref],
        cwd="/",
        timeout=120,
        dimensions=(24, 100),
        encoding="utf-8",
    )
    try:
        child.expect(f"Pulled: {ref}")
        screen = child.before
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    for layer, _ in layers:
        assert f"{layer[7:19]}: done" in screen  # the bar's label and phase
    assert "\u2588" in screen and "\r" in screen  # drawn bars, redrawn in place
    assert f"{layers[0][0][7:19]}: waiting\n" not in screen.replace("\r\n", "\n")  # not plain lines


def test_cli_prints_lines_on_a_terminal_without_tqdm(registry, pushed, tmp_path):
    ref, _ = pushed
    layer = layer_descriptors(registry, ref)[0][0]
    code = (
        "import sys; sys.modules['tqdm'] = None  # as if the extra were not installed\n"
        "from sandboxlib.frontends.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    child = pexpect.spawn(
        sys.executable,
        ["-c", code, "pull", "--store", str(tmp_path / "store"), ref],
        cwd="/",
        timeout=120,
        encoding="utf-8",
    )
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert f"{layer[7:19]}: waiting\r\n" in child.before and "\u2588" not in child.before
