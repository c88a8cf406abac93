"""``ImageStore.build`` (root and rootless): the instructions, the result
as a normal image, the cache, stages, the context's safety and errors."""

from __future__ import annotations

import os
import textwrap

import sandboxlib as sb

from .imagekit import add_image, busybox_layers

BASE_CONFIG = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}


def _setup(root: str, busybox_rootfs: str, dockerfile: str, files: dict) -> tuple:
    """(store, context dir): a store with bb:1 (busybox) and a context of ``files``."""
    store = sb.ImageStore(os.path.join(root, "store"))
    try:
        store.get("bb:1")
    except sb.ImageNotFound:
        add_image(store, busybox_layers(busybox_rootfs)[:1], ["bb:1"], config=BASE_CONFIG)
    context = os.path.join(root, "ctx")
    os.makedirs(context, exist_ok=True)
    write(context, {"Dockerfile": textwrap.dedent(dockerfile), **files})
    return store, context


def write(context: str, files: dict) -> None:
    for name, data in files.items():
        path = os.path.join(context, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(data, tuple):  # ("link", target)
            os.symlink(data[1], path)
        else:
            with open(path, "w") as f:
                f.write(data)


class Events:
    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def kinds(self, kind: str) -> list:
        return [e for e in self.events if e.kind == kind]

    def ran(self) -> list:
        """The steps that were not cache hits."""
        steps, out = [], []
        for event in self.events:
            if event.kind == "step":
                steps.append(event.text)
            elif event.kind == "cached":
                steps.pop()
        out = [s for s in steps if not s.startswith("ARG")]
        return out


INSTRUCTIONS = """\
    # syntax=docker/dockerfile:1
    ARG BASE=bb:1
    FROM ${BASE} AS base
    ENV GREETING=hi \\
        OTHER="two words"
    ARG V=1
    WORKDIR /app/work
    COPY src/ ./
    COPY --chown=app:extra --chmod=640 src/a.txt /owned/
    RUN echo "v=$V ${GREETING} ${OTHER}" > out.txt && rm /etc/group && chown 1000:1000 out.txt
    RUN <<EOF
    echo heredoc ran
    mkdir -p /made && echo made > /made/file
    EOF
    COPY <<EOF /app/generated
    greeting=$GREETING
    EOF
    SHELL ["/bin/sh", "-ec"]
    RUN ["sh", "-c", "echo exec form > /exec"]
    USER app
    ENTRYPOINT ["sh", "-c"]
    CMD ["cat out.txt /app/generated"]
    EXPOSE 80 443/udp
    LABEL a=b "c d"=e
    VOLUME /data
    STOPSIGNAL SIGTERM
    HEALTHCHECK --interval=5s --retries=3 CMD true
    ONBUILD RUN echo triggered
    """

PROBE = (
    "cd /; stat -c '%n %a %u:%g' app/work/a.txt app/work/sub app/work/sub/b.txt owned/a.txt app/work/out.txt; "
    "readlink app/work/link; [ -e etc/group ] || echo group-gone; cat made/file exec"
)


def check_instructions(root, busybox_rootfs):
    files = {"src/a.txt": "A\n", "src/sub/b.txt": "B\n", "src/link": ("link", "a.txt")}
    store, context = _setup(root, busybox_rootfs, INSTRUCTIONS, files)
    events = Events()
    image = store.build(
        context, tag="app:1", build_args={"V": "2"}, progress=events, labels={"built": "$not ${substituted}"}
    )
    default = sb.run(None, image="app:1", image_store=store.path)
    probe = sb.run([PROBE], image="app:1", image_store=store.path, user="0")
    history = [(h["created_by"], h.get("empty_layer", False)) for h in _history(store, image)]
    saved = os.path.join(root, "app.tar")
    store.save("app:1", saved)
    outputs = [e.text for e in events.kinds("output")]
    return (
        image.config,
        len(image.layers),
        history,
        default.stdout,
        probe.stdout,
        probe.stderr,
        outputs,
        os.path.getsize(saved),
    )


def _history(store, image):
    import json

    return json.loads(store.blobs.read(image.id))["history"]


def test_instructions_make_a_normal_image(runner, store_dir, busybox_root):
    config, layers, history, default, probe, err, outputs, saved = runner(check_instructions, store_dir, busybox_root)
    assert config["Env"] == ["PATH=/bin", "GREETING=hi", "OTHER=two words"]
    assert config["WorkingDir"] == "/app/work" and config["User"] == "app"
    assert config["Entrypoint"] == ["sh", "-c"] and config["Cmd"] == ["cat out.txt /app/generated"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "443/udp": {}}
    assert config["Labels"] == {"a": "b", "c d": "e", "built": "$not ${substituted}"} and config["Volumes"] == {
        "/data": {}
    }
    assert config["StopSignal"] == "SIGTERM" and config["Shell"] == ["/bin/sh", "-ec"]
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 3}
    assert config["OnBuild"] == ["RUN echo triggered"]
    # busybox + WORKDIR + 2 COPY + RUN + RUN + COPY + RUN
    assert layers == 8
    assert history[1:3] == [("ENV GREETING=hi OTHER=two words", True), ("WORKDIR /app/work", False)]
    assert ("LABEL a=b c d=e", True) in history and history[-2] == ("ONBUILD RUN echo triggered", True)
    assert default == b"v=2 hi two words\ngreeting=hi\n"
    assert err == b""
    assert probe.decode().splitlines() == [
        "app/work/a.txt 644 0:0",
        "app/work/sub 755 0:0",
        "app/work/sub/b.txt 644 0:0",
        "owned/a.txt 640 1000:1001",
        "app/work/out.txt 644 1000:1000",
        "a.txt",
        "group-gone",
        "made",
        "exec form",
    ]
    assert "heredoc ran" in outputs and saved > 0


CACHED = """\
    FROM bb:1
    COPY a.txt /a.txt
    RUN cat /a.txt > /copy && echo ran
    COPY b.txt /b.txt
    ARG V=1
    RUN echo ran2 $V
    """


def check_cache(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, CACHED, {"a.txt": "a\n", "b.txt": "b\n"})
    runs = {}
    for name, change in [
        ("cold", None),
        ("again", None),
        ("touch", lambda: os.utime(os.path.join(context, "a.txt"))),
        ("b-changed", lambda: write(context, {"b.txt": "B\n"})),
        ("sneaky", lambda: _same_size_and_mtime(os.path.join(context, "b.txt"), "C\n")),
        ("arg", None),
        ("no-cache", None),
    ]:
        if change:
            change()
        events = Events()
        image = store.build(
            context,
            tag="c:1",
            progress=events,
            build_args={"V": "2"} if name == "arg" else None,
            no_cache=name == "no-cache",
        )
        runs[name] = (events.ran(), image.id)
    before = len(store.cache_entries())
    store.remove("c:1")
    report = store.prune()
    return runs, before, len(store.cache_entries()), len(report.images)


def _same_size_and_mtime(path: str, text: str) -> None:
    """New bytes of the same size, the old mtime put back (only the ctime tells)."""
    st = os.stat(path)
    write(os.path.dirname(path), {os.path.basename(path): text})
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_hits_misses_and_prune(runner, store_dir, busybox_root):
    runs, before, after, pruned = runner(check_cache, store_dir, busybox_root)
    assert len(runs["cold"][0]) == 4
    assert runs["again"] == ([], runs["cold"][1])  # nothing runs, the same image
    assert runs["touch"] == ([], runs["cold"][1])  # mtimes are not content
    assert runs["b-changed"][0] == ["COPY b.txt /b.txt", "RUN echo ran2 $V"]
    assert runs["sneaky"][0] == ["COPY b.txt /b.txt", "RUN echo ran2 $V"]  # the stat memo is not fooled
    assert runs["arg"][0] == ["RUN echo ran2 $V"]  # a build arg the RUN sees
    assert len(runs["no-cache"][0]) == 4
    assert before == 9 and after == 0  # 4 steps, 2 after each change, 1 after the arg
    assert pruned == 8  # the last step (c:1) went with its rmi


STAGES = """\
    FROM bb:1 AS builder
    RUN mkdir /out && echo built > /out/result && ln -s result /out/link
    FROM bb:1 AS broken
    RUN exit 1
    FROM builder AS more
    RUN echo more > /out/more
    FROM scratch AS final
    COPY --from=more /out /
    COPY --from=0 /out/result /again
    """


def check_stages(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, STAGES, {})
    image = store.build(context, tag="multi:1")
    from sandboxlib.build.imageview import ImageView

    view = ImageView(store, image.layers, {})
    found = {k: (n.info.type, view.read(n) if n.info.isreg() else n.info.linkname) for k, n in view.nodes.items()}
    middle = store.build(context, tag="more:1", target="more")
    return found, len(image.layers), len(middle.layers)


def test_stages_targets_and_copy_from(runner, store_dir, busybox_root):
    found, layers, middle = runner(check_stages, store_dir, busybox_root)
    assert found == {
        "result": (b"0", b"built\n"),
        "link": (b"2", "result"),
        "more": (b"0", b"more\n"),
        "again": (b"0", b"built\n"),
    }
    assert layers == 2 and middle == 3  # the broken stage was never built


def check_errors(root, busybox_rootfs):
    outcomes = {}
    cases = {
        "syntax": ("FROM bb:1\nRUN true\nFROOM x\n", {}),
        "unknown stage": ("FROM bb:1\nCOPY --from=nowhere /x /y\n", {}),
        "missing": ("FROM bb:1\nCOPY missing.txt /\n", {}),
        "outside": ("FROM bb:1\nCOPY ../secret /\n", {}),
        "link out": ("FROM bb:1\nCOPY out/passwd /\n", {"out": ("link", "/etc")}),
        "link up": ("FROM bb:1\nCOPY up /\n", {"up": ("link", "../../../../etc/passwd")}),
        "ignored": ("FROM bb:1\nCOPY x.log /\n", {".dockerignore": "*.log\n", "x.log": "x"}),
        "network": ("FROM bb:1\nRUN --network=host true\n", {}),
        "run": ("FROM bb:1\nCOPY f /f\nRUN echo line1; echo line2 >&2; exit 3\n", {"f": "f"}),
    }
    for name, (dockerfile, files) in cases.items():
        case_root = os.path.join(root, name.replace(" ", "-"))
        store, context = _setup(case_root, busybox_rootfs, dockerfile, files)
        images = [i.id for i in store.list()]
        try:
            store.build(context, tag="bad:1")
        except sb.BuildError as err:
            extra = (err.exit_code, err.output) if isinstance(err, sb.BuildStepFailed) else None
            outcomes[name] = (type(err).__name__, err.line, str(err), extra)
        else:
            outcomes[name] = None
        assert [i.id for i in store.list()] == images  # nothing new is referenced
        assert not os.listdir(store.tmp)
    return outcomes


def test_errors_name_file_and_line(runner, store_dir, busybox_root):
    outcomes = runner(check_errors, store_dir, busybox_root)
    assert outcomes["syntax"][1:3] == (3, f"{store_dir}/syntax/ctx/Dockerfile:3: unknown instruction 'FROOM'")
    assert outcomes["unknown stage"][1] == 2 and "nowhere" in outcomes["unknown stage"][2]
    assert outcomes["missing"][1] == 2 and "not found in the build context" in outcomes["missing"][2]
    assert "outside the build context" in outcomes["outside"][2]
    assert "not found in the build context" in outcomes["link out"][2]  # /etc resolved inside the context
    assert "not found in the build context" in outcomes["link up"][2]
    assert "excluded by .dockerignore" in outcomes["ignored"][2]
    assert "--network=host: the build's network is none" in outcomes["network"][2]
    kind, line, text, (code, output) = outcomes["run"]
    assert (kind, line, code, output) == ("BuildStepFailed", 3, 3, "line1\nline2")
    assert "exit status 3" in text and "line2" in text


def check_dockerignore_and_add(root, busybox_rootfs):
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("pkg/x", b"x\n"), ("pkg/y", b"y\n")):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), 7, 8, 0o600
            tar.addfile(info, io.BytesIO(data))
    dockerfile = "FROM bb:1\nCOPY . /ctx/\nADD pkg.tgz /opt/\nADD plain.txt /opt/plain.txt\n"
    files = {
        ".dockerignore": "*.log\n!keep.log\nsecret\n**/*.tmp\n",
        "a.log": "no",
        "keep.log": "yes",
        "secret/key": "no",
        "deep/x.tmp": "no",
        "deep/ok": "ok",
        "plain.txt": "plain",
    }
    store, context = _setup(root, busybox_rootfs, dockerfile, files)
    with open(os.path.join(context, "pkg.tgz"), "wb") as f:
        f.write(archive.getvalue())
    store.build(context, tag="ign:1")
    probe = "cd /ctx && find . | sort; stat -c '%n %a %u:%g' /opt/pkg/x; cat /opt/pkg/y /opt/plain.txt"
    return sb.run(["sh", "-c", probe], image="ign:1", image_store=store.path).stdout.decode()


def test_dockerignore_and_add_archives(runner, store_dir, busybox_root):
    out = runner(check_dockerignore_and_add, store_dir, busybox_root)
    listing, rest = out.split("/opt/pkg/x", 1)
    assert listing.split() == [
        ".",
        "./.dockerignore",
        "./Dockerfile",
        "./deep",
        "./deep/ok",
        "./keep.log",
        "./pkg.tgz",
        "./plain.txt",
    ]
    assert rest.split() == ["600", "7:8", "y", "plain"]


def test_cli_build(store_dir, busybox_root, tmp_path):
    from .conftest import sandboxlib_cli

    store, context = _setup(str(tmp_path), busybox_root, "FROM bb:1\nARG X\nRUN echo x=$X > /x\nCMD cat /x\n", {})
    result = sandboxlib_cli(
        "build", "--store", store.path, "-t", "cli:1", "--build-arg", "X=7", "--no-cache", context, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "RUN echo x=$X > /x" in result.stderr
    assert sb.run(None, image="cli:1", image_store=store.path).stdout == b"x=7\n"
    bad = sandboxlib_cli("build", "--store", store.path, "--target", "nope", context, text=True)
    assert bad.returncode != 0 and "target stage 'nope' could not be found" in bad.stderr
    write(context, {"Hosts": "FROM bb:1\nRUN ping -c1 -W2 db.test && cp /etc/hosts /h\n"})
    hosts = ["--add-host", "db.test:127.0.0.1", "-f", os.path.join(context, "Hosts")]
    result = sandboxlib_cli("build", "--store", store.path, "-t", "hosts:1", *hosts, context, text=True)
    assert result.returncode == 0, result.stderr
    assert b"127.0.0.1\tdb.test\n" in sb.run(["cat", "/h"], image="hosts:1", image_store=store.path).stdout
    again = sandboxlib_cli("build", "--store", store.path, "--cache-from", "nosuch:1", *hosts, context, text=True)
    assert again.returncode == 0 and "(0 of 1 steps cached)" in again.stderr, again.stderr  # the RUN ran again
    assert "WARNING: cache_from: no image 'nosuch:1' here, skipped" in again.stderr, again.stderr


def check_add_url(root, busybox_rootfs):
    import hashlib
    import http.server
    import threading

    body = b"downloaded\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/dir/file.txt"
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    outcomes = {}
    try:
        for name, checksum, network in [
            ("ok", good, "host"),
            ("no network", good, "none"),
            ("no checksum", None, "host"),
            ("mismatch", "sha256:" + "0" * 64, "host"),
        ]:
            flag = f"--checksum={checksum} " if checksum else ""
            store, context = _setup(
                os.path.join(root, name.replace(" ", "-")), busybox_rootfs, f"FROM bb:1\nADD {flag}{url} /d/\n", {}
            )
            try:
                image = store.build(context, tag="url:1", network=network)
                probe = sb.run(["stat", "-c", "%a %s", "/d/file.txt"], image=image.id, image_store=store.path)
                outcomes[name] = probe.stdout.decode().strip()
            except sb.BuildError as err:
                outcomes[name] = str(err).split(": ", 1)[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    return outcomes


def test_add_url_needs_network_and_checksum(runner, store_dir, busybox_root):
    outcomes = runner(check_add_url, store_dir, busybox_root)
    assert outcomes["ok"] == "600 11"
    assert "needs a network" in outcomes["no network"]
    assert "needs --checksum=sha256:" in outcomes["no checksum"]
    assert "checksum mismatch" in outcomes["mismatch"]


def _tar(entries) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buf.getvalue()


def check_hostile_archives(root, busybox_rootfs):
    archives = {
        "dotdot": _tar([("../escape", "file", b"x")]),
        "symlinked parent": _tar([("etc", "link", "/etc"), ("etc/passwd", "file", b"owned")]),
    }
    outcomes = {}
    for name, data in archives.items():
        store, context = _setup(
            os.path.join(root, name.replace(" ", "-")), busybox_rootfs, "FROM bb:1\nADD a.tar /opt/\n", {}
        )
        with open(os.path.join(context, "a.tar"), "wb") as f:
            f.write(data)
        try:
            store.build(context, tag="hostile:1")
            outcomes[name] = None
        except sb.BuildError as err:
            outcomes[name] = (err.line, str(err))
    return outcomes


def test_hostile_archives_are_refused(runner, store_dir, busybox_root):
    outcomes = runner(check_hostile_archives, store_dir, busybox_root)
    assert outcomes["dotdot"][0] == 2 and "leads out of the destination" in outcomes["dotdot"][1]
    assert outcomes["symlinked parent"][0] == 2 and "opt/etc" in outcomes["symlinked parent"][1]


def check_onbuild_platform_and_proxy(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, "FROM bb:1\nONBUILD RUN echo triggered > /trigger\n", {})
    store.build(context, tag="parent:1")
    child = os.path.join(root, "child")
    write(
        child,
        {
            "Dockerfile": "FROM --platform=$BUILDPLATFORM parent:1\nARG TARGETARCH\n"
            'RUN echo "$TARGETARCH ${http_proxy:-none}" > /args\n'
        },
    )
    events = Events()
    image = store.build(child, tag="child:1", build_args={"http_proxy": "http://proxy:3128"}, progress=events)
    out = sb.run(["cat", "/trigger", "/args"], image="child:1", image_store=store.path).stdout.decode()
    again = Events()
    store.build(child, tag="child:1", build_args={"http_proxy": "http://other:3128"}, progress=again)
    other = os.path.join(root, "other")
    write(other, {"Dockerfile": "FROM --platform=linux/s390x parent:1\n"})
    try:
        store.build(other)
        refused = None
    except sb.UnsupportedError as err:
        refused = str(err)
    warnings = [e.text for e in events.kinds("warning")]
    return out, image.config.get("OnBuild"), again.ran(), refused, warnings


def test_onbuild_platform_and_proxy_args(runner, store_dir, busybox_root):
    from sandboxlib.images.newimage import host_platform

    out, onbuild, rerun, refused, warnings = runner(check_onbuild_platform_and_proxy, store_dir, busybox_root)
    assert out.splitlines() == ["triggered", f"{host_platform()[1]} http://proxy:3128"]
    assert onbuild is None  # the triggers ran, and are not inherited
    assert rerun == []  # a proxy arg is not in the cache key, as Docker's
    assert "s390x" in refused and warnings == []


def check_single_id_build(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, "FROM bb:1\nCOPY f /f\nRUN cat /f > /g && rm /f\n", {"f": "x\n"})
    store.build(context, tag="single:1")
    return sb.run(["sh", "-c", "cat /g; ls /f 2>&1; stat -c %u:%g /g"], image="single:1", image_store=store.path).stdout


def test_rootless_without_sub_ids(single_id_runner, shared_dir, busybox_root):
    import tempfile

    root = tempfile.mkdtemp(prefix="single-", dir=str(shared_dir))
    os.chown(root, single_id_runner.worker.user.pw_uid, single_id_runner.worker.user.pw_gid)
    out = single_id_runner(check_single_id_build, root, busybox_root)
    assert out.decode().splitlines() == ["x", "ls: /f: No such file or directory", "0:0"]


def test_dockerfile_specific_ignore_file(tmp_path):
    from sandboxlib.build.context import load_ignore

    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "app.Dockerfile.dockerignore").write_text("# comment\n/b/\n!b/keep\n")
    general = load_ignore(str(tmp_path), str(tmp_path / "Dockerfile"))
    specific = load_ignore(str(tmp_path), str(tmp_path / "app.Dockerfile"))
    assert general.ignored("a") and not general.ignored("b/x")
    assert not specific.ignored("a") and specific.ignored("b/x") and not specific.ignored("b/keep")


PARALLEL = """\
    FROM bb:1 AS slow
    RUN sleep 1; echo slow-done
    FROM bb:1 AS fast
    RUN echo fast-done
    FROM bb:1
    COPY --from=slow /etc/passwd /a
    COPY --from=fast /etc/passwd /b
    """
CANCELLED = """\
    FROM bb:1 AS slow
    RUN sleep 60
    FROM bb:1 AS broken
    RUN exit 5
    FROM bb:1
    COPY --from=slow /etc/passwd /a
    COPY --from=broken /etc/passwd /b
    """


def check_parallel_stages(root, busybox_rootfs):
    import time

    store, context = _setup(os.path.join(root, "parallel"), busybox_rootfs, PARALLEL, {})
    events = Events()
    store.build(context, tag="par:1", progress=events)
    outputs = [(e.stage, e.text) for e in events.kinds("output")]
    store, context = _setup(os.path.join(root, "cancelled"), busybox_rootfs, CANCELLED, {})
    start = time.monotonic()
    try:
        store.build(context, tag="cancel:1")
        failed = None
    except sb.BuildStepFailed as err:
        failed = (err.line, err.exit_code)
    return outputs, failed, time.monotonic() - start


def test_independent_stages_run_side_by_side(runner, store_dir, busybox_root):
    outputs, failed, seconds = runner(check_parallel_stages, store_dir, busybox_root)
    assert outputs == [("fast", "fast-done"), ("slow", "slow-done")]  # fast did not wait for slow
    assert failed == (4, 5) and seconds < 30  # the failure stopped the sleeping stage


CACHE_FROM = """\
    FROM bb:1
    ENV FOO=bar
    RUN touch baz
    RUN touch bax
    """
SIBLING = """\
    FROM bb:1
    ENV FOO=bar
    RUN touch other
    """


def check_cache_from(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, CACHE_FROM, {"Sibling": textwrap.dedent(SIBLING)})
    first = store.build(context, tag="first:1")
    store.build(context, tag="sibling:1", dockerfile="Sibling")
    out = {}
    for name, sources in (
        ("first", ["first:1"]),
        ("sibling", ["sibling:1"]),
        ("missing", ["nosuchtag"]),
        ("empty", []),
        ("none", None),
    ):
        events = Events()
        image = store.build(context, tag="second:1", cache_from=sources, progress=events)
        warnings = [e.text for e in events.kinds("warning")]
        out[name] = (events.ran(), len(events.kinds("cached")), image.id == first.id, warnings)
    return out


def test_cache_from_reuses_only_those_images_steps(runner, store_dir, busybox_root):
    """Docker's legacy builder's cache_from: a cached step counts only when it is
    one of the images named or an ancestor of one (its history and layers begin
    theirs); a name the store lacks is skipped with a warning."""
    out = runner(check_cache_from, store_dir, busybox_root)
    assert out["first"] == ([], 3, True, []), out
    assert out["sibling"] == (["RUN touch baz", "RUN touch bax"], 1, False, []), out  # ENV FOO=bar: an ancestor
    assert out["missing"][:3] == (["ENV FOO=bar", "RUN touch baz", "RUN touch bax"], 0, False), out
    assert out["missing"][3] == ["cache_from: no image 'nosuchtag' here, skipped"], out
    assert out["empty"][:2] == (["ENV FOO=bar", "RUN touch baz", "RUN touch bax"], 0), out
    assert out["none"][1] == 3, out  # without cache_from, any step of the store's cache


EXTRA_HOSTS = """\
    FROM bb:1
    RUN ping -c1 -W2 hello.world.test && ping -c1 -W2 extrahost.local.test
    RUN cp /etc/hosts /hosts-file
    """


def check_extra_hosts(root, busybox_rootfs):
    store, context = _setup(root, busybox_rootfs, EXTRA_HOSTS, {})
    hosts = {"extrahost.local.test": "127.0.0.1", "hello.world.test": "127.0.0.1"}
    image = store.build(context, tag="hosts:1", extra_hosts=hosts)
    copied = sb.run(["cat", "/hosts-file"], image=image.id, image_store=store.path, stdin=sb.DEVNULL).stdout
    runs = {}
    for name, given in (("same", hosts), ("other", {**hosts, "more.test": "10.0.0.1"}), ("without", None)):
        events = Events()
        try:
            store.build(context, extra_hosts=given, progress=events)
            runs[name] = events.ran()
        except sb.BuildStepFailed as err:
            runs[name] = (events.ran(), err.exit_code)
    return copied.decode(), runs


def test_extra_hosts_are_in_the_runs_etc_hosts(runner, store_dir, busybox_root):
    """``extra_hosts`` (``--add-host``): lines of each RUN's /etc/hosts on a
    network of none, resolvable (``ping``: RUN has NET_RAW, as docker build's)
    and part of the RUN steps' cache keys."""
    copied, runs = runner(check_extra_hosts, store_dir, busybox_root)
    assert "127.0.0.1\textrahost.local.test\n" in copied and "127.0.0.1\thello.world.test\n" in copied, copied
    assert runs["same"] == [], runs
    assert runs["other"] == [EXTRA_HOSTS.splitlines()[1].strip(), "RUN cp /etc/hosts /hosts-file"], runs
    assert runs["without"][1] != 0, runs  # the names resolve no more
