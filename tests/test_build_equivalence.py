"""The same Dockerfiles built by us, by Docker's legacy builder (a private
dockerd, ``DOCKER_BUILDKIT=0``) and by ``buildah bud`` (Debian's): the
images' file trees (paths, types, modes, owners, link targets, contents)
and configs compared.  Their images come back into a store of ours
(``docker save`` / ``buildah push docker-archive:``) and are read with the
same image view.  dockerd and buildah run as root here; our builds, as
root and rootless (a user with sub-ids), give Docker's trees, owners included."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import textwrap

import pytest

import sandboxlib as sb
from sandboxlib.build.imageview import ImageView

from .dockerd import Dockerd
from .imagekit import add_image, busybox_layers

BASE_CONFIG = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
CONFIG_KEYS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
)

DOCKERFILES = {
    "instructions": """\
        FROM bb:1
        ENV A=1 B="two words"
        ARG V=3
        WORKDIR /app/w
        COPY src/ ./
        COPY --chown=app:extra src/a.txt /owned/
        COPY src/a.txt src/sub/b.txt /multi/
        COPY src/sub /subcopy
        COPY src/link /followed
        ADD arch.tar /opt/
        RUN echo "v=$V $B" > /app/w/out && rm /etc/group && mkdir -p /made/deep && \\
            chown -R 1000:1000 /made && ln -s /made /madelink && chmod 700 /made/deep && rm -r /home
        USER app
        EXPOSE 80 53/udp
        LABEL l1=a "l 2"=b
        VOLUME ["/data"]
        STOPSIGNAL SIGINT
        HEALTHCHECK --interval=10s --retries=2 CMD true
        ENTRYPOINT ["sh"]
        CMD ["-c", "cat /app/w/out"]
        """,
    "stages": """\
        FROM bb:1 AS build
        RUN mkdir /out && echo x > /out/x && ln -s x /out/l && chmod 751 /out
        FROM bb:1
        WORKDIR /srv
        COPY --from=build /out /dst/
        COPY --from=build /out/x .
        """,
    "symlinks": """\
        FROM bb:1
        RUN echo target > /target && ln -s /target /victim && mkdir /realdir && ln -s /realdir /linkdir
        COPY src/a.txt /victim
        COPY src/sub/b.txt /linkdir/
        COPY src/sub /linkdir/sub/
        """,
}


def _context(top: str, name: str) -> str:
    context = os.path.join(top, name)
    os.makedirs(os.path.join(context, "src", "sub"))
    files = {"src/a.txt": "A\n", "src/sub/b.txt": "B\n", "src/x.sh": "#!/bin/sh\n"}
    for rel, data in files.items():
        with open(os.path.join(context, rel), "w") as f:
            f.write(data)
    os.chmod(os.path.join(context, "src/x.sh"), 0o755)
    os.chmod(os.path.join(context, "src/sub"), 0o750)
    os.symlink("a.txt", os.path.join(context, "src/link"))
    with tarfile.open(os.path.join(context, "arch.tar"), "w") as tar:
        for rel, data, mode in (("pkg/", b"", 0o711), ("pkg/bin", b"bin\n", 0o755), ("pkg/etc.conf", b"c\n", 0o600)):
            info = tarfile.TarInfo(rel.rstrip("/"))
            info.mode, info.uid, info.gid, info.mtime = mode, 5, 6, 1_700_000_000
            if rel.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write(textwrap.dedent(DOCKERFILES[name]))
    return context


def tree(store, image) -> dict:
    """path -> (type, mode, uid, gid, link target or content hash) of the merged tree."""
    view = ImageView(store, image.layers, {})
    found = {}
    for path, node in view.nodes.items():
        info = node.info
        what = info.linkname if info.issym() else ""
        if info.isreg() or info.islnk():
            what = hashlib.sha256(view.read(node)).hexdigest()[:12]
        kind = "l" if info.issym() else "d" if info.isdir() else "f"
        found[path] = (kind, oct(info.mode & 0o7777), info.uid, info.gid, what)
    return found


def config(image) -> dict:
    found = {k: image.config.get(k) or None for k in CONFIG_KEYS}  # buildah writes "" and [] for unset keys
    found["Labels"] = {k: v for k, v in (found["Labels"] or {}).items() if not k.startswith("io.buildah")} or None
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory, busybox_root):
    """name -> {builder: (tree, config)} for every Dockerfile, by us, docker and buildah."""
    top = str(tmp_path_factory.mktemp("equivalence"))
    store = sb.ImageStore(os.path.join(top, "store"))
    add_image(store, busybox_layers(busybox_root)[:1], ["bb:1"], config=BASE_CONFIG)
    base = os.path.join(top, "bb.tar")
    store.save("bb:1", base)
    theirs = sb.ImageStore(os.path.join(top, "theirs"))
    buildah = [
        "buildah",
        "--root",
        os.path.join(top, "buildah"),
        "--runroot",
        os.path.join(top, "buildah-run"),
        "--storage-driver",
        "vfs",
    ]
    subprocess.run(buildah + ["pull", "-q", f"docker-archive:{base}"], check=True, capture_output=True)
    daemon = Dockerd(os.path.join(top, "docker"))
    results = {}
    try:
        daemon("load", "-i", base)
        for name in DOCKERFILES:
            context = _context(top, name)
            ours = store.build(context, tag=f"{name}:ours")
            daemon("build", "-q", "--network", "none", "-t", f"{name}:docker", context, timeout=300)
            daemon("save", "-o", os.path.join(top, f"{name}-docker.tar"), f"{name}:docker")
            bud = ["bud", "-q", "--isolation", "oci", "--runtime", "runc", "--network", "none", "--format", "docker"]
            subprocess.run(buildah + bud + ["-t", f"{name}:buildah", context], check=True, capture_output=True)
            archive = os.path.join(top, f"{name}-buildah.tar")
            push = ["push", "-q", f"{name}:buildah", f"docker-archive:{archive}:{name}:buildah"]
            subprocess.run(buildah + push, check=True, capture_output=True)
            images = {
                "ours": (store, ours),
                "docker": (theirs, theirs.load(os.path.join(top, f"{name}-docker.tar"))[0]),
                "buildah": (theirs, theirs.load(archive)[0]),
            }
            results[name] = {who: (tree(s, image), config(image)) for who, (s, image) in images.items()}
    finally:
        daemon.close()
        subprocess.run(buildah + ["rmi", "-a", "-f"], capture_output=True)
        subprocess.run(["rm", "-rf", os.path.join(top, "buildah"), os.path.join(top, "buildah-run")])
    return results


# Where the peers disagree with each other, we build as Docker does: a COPY to a symlink
# writes through it (inside the image's root); buildah replaces the symlink.
KNOWN = {("buildah", "symlinks"): {"target", "victim"}}


def _differences(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
@pytest.mark.parametrize("peer", ["docker", "buildah"])
def test_same_files_and_config_as_peer(built, name, peer):
    ours, theirs = built[name]["ours"], built[name][peer]
    if peer == "buildah":  # the empty mount point its RUN containers leave behind
        theirs[0].pop("etc/hostname", None)
    assert set(_differences(ours[0], theirs[0])) == KNOWN.get((peer, name), set())
    assert _differences(ours[1], theirs[1]) == {}


def build_here(top: str, busybox_rootfs: str, name: str):
    """(tree, config) of our build of ``name`` in a store under ``top``, as the calling user."""
    store = sb.ImageStore(os.path.join(top, "store"))
    add_image(store, busybox_layers(busybox_rootfs)[:1], ["bb:1"], config=BASE_CONFIG)
    image = store.build(_context(top, name), tag=f"{name}:ours")
    return tree(store, image), config(image)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_rootless_builds_the_same_image(built, workers, shared_dir, busybox_root, name):
    import tempfile

    from .conftest import Runner

    runner = Runner("rootless", workers["sbxtest"])
    top = tempfile.mkdtemp(prefix="equivalence-", dir=str(shared_dir))
    os.chown(top, runner.worker.user.pw_uid, runner.worker.user.pw_gid)
    files, settings = runner(build_here, top, busybox_root, name)
    assert _differences(files, built[name]["docker"][0]) == {}  # owners too: the RUN's chown, --chown
    assert _differences(settings, built[name]["docker"][1]) == {}
