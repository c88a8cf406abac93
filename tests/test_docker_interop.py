"""Archives exchanged with a real Docker (Debian's docker.io, a private
dockerd for this module): ``docker load`` reads what ``store.save`` writes
(same image id, config and layer diff_ids; ``docker run`` sees the files and
not the deleted ones), and ``store.load`` reads what ``docker save`` writes,
for our image and for one ``docker build`` made (whiteouts of Docker's own
differ), which then run here as root and rootless.  Docker 20.10 writes only
the legacy ``docker save`` format; the OCI-in-tar one of Docker >= 25 is read
by test_images_import (as skopeo writes it)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import sandboxlib as sb
from sandboxlib.images import ImageStore

from .dockerd import Dockerd
from .imagekit import add_image, busybox_layers

# Entrypoint + Cmd, Env, WorkingDir and User, and three layers whose last one
# deletes a file, a directory, and empties another (an opaque whiteout).
PROBE = (
    "echo uid=$(id -u) cwd=$(pwd) greeting=$GREETING; cat /app/new.txt /etc/motd; "
    "for p in /etc/old /scratch /app/old.txt /app/sub; do [ -e $p ] && echo present:$p; done; true"
)
OURS = {
    "Entrypoint": ["sh", "-c"],
    "Cmd": [PROBE],
    "Env": ["PATH=/bin", "GREETING=hi"],
    "WorkingDir": "/app",
    "User": "app",
}
OURS_OUT = ["uid=1000 cwd=/app greeting=hi", "new", "motd 3"]

# An image Docker builds itself: a COPY layer, a RUN layer that deletes.
DOCKERFILE = """FROM scratch
COPY rootfs/ /
RUN ["/bin/sh", "-c", "rm /etc/doomed && rm -r /junk && echo built > /built.txt"]
ENV GREETING=docker
WORKDIR /work
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo uid=$(id -u) cwd=$(pwd) greeting=$GREETING; cat /built.txt; ls /etc/doomed /junk 2>/dev/null; true"]
"""
BUILT_OUT = ["uid=1000 cwd=/work greeting=docker", "built"]
CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    daemon = Dockerd(str(tmp_path_factory.mktemp("docker")))
    yield daemon
    daemon.close()


@pytest.fixture(scope="module")
def exchanged(docker, shared_dir, busybox_root):
    """Our image saved and ``docker load``-ed; Docker's built; both ``docker save``-d.
    Returns (our Image, its ``docker load`` output, the docker save archive path)."""
    top = shared_dir / "docker-interop"
    top.mkdir(mode=0o755)
    store = ImageStore(str(top / "store"))
    image = add_image(store, busybox_layers(busybox_root), ["app:1"], config=OURS)
    store.save(["app:1"], str(top / "ours.tar"))
    loaded = docker("load", "-i", str(top / "ours.tar")).stdout
    context = top / "context"
    shutil.copytree(busybox_root, context / "rootfs", symlinks=True)
    (context / "rootfs" / "etc" / "doomed").write_text("doomed\n")
    (context / "rootfs" / "junk" / "deep").mkdir(parents=True)
    (context / "rootfs" / "junk" / "deep" / "f").write_text("f\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    docker("build", "-q", "--network", "none", "-t", "built:1", str(context))
    docker("save", "-o", str(top / "docker.tar"), "app:1", "built:1")
    os.chmod(top / "docker.tar", 0o644)  # the rootless runner reads it
    yield image, loaded, str(top / "docker.tar")
    shutil.rmtree(top)


def inspect(docker, ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]


def test_docker_load_reads_our_archive(docker, exchanged):
    image, loaded, _ = exchanged
    assert loaded.strip() == "Loaded image: app:1"
    seen = inspect(docker, "app:1")
    assert seen["Id"] == image.id
    assert seen["RootFS"]["Layers"] == [layer.diff_id for layer in image.layers]
    assert {k: seen["Config"][k] for k in CONFIG_KEYS} == OURS
    assert (seen["Os"], seen["Architecture"]) == (image.os, image.architecture)


def test_docker_runs_our_image(docker, exchanged):
    out = docker("run", "--rm", "--network", "none", "app:1")
    assert (out.stdout.splitlines(), out.stderr) == (OURS_OUT, "")
    out = docker("run", "--rm", "--network", "none", "--user", "0", "app:1", "id -u; ls /app")
    assert out.stdout.splitlines() == ["0", "new.txt"]  # the opaque directory hides old.txt and sub/


def check_load_docker_save(path, archive):
    store = ImageStore(path)
    loaded = {ref: image for image in store.load(archive) for ref in image.references}
    found = {
        ref: (image.id, [layer.diff_id for layer in image.layers], {k: image.config.get(k) for k in CONFIG_KEYS})
        for ref, image in loaded.items()
    }
    runs = {}
    for ref in sorted(loaded):
        result = sb.run(None, image=ref, image_store=path)  # the image's own command
        with sb.Container(image=ref, image_store=path) as c:
            listing = c.run(["ls", "/", "/app"], user="0").stdout.decode().split()
        runs[ref] = (result.exit_code, result.stdout.decode(), result.stderr.decode(), listing)
    return found, runs


def test_load_reads_docker_save(runner, store_dir, docker, exchanged):
    image, _, archive = exchanged
    found, runs = runner(check_load_docker_save, store_dir, archive)
    assert sorted(found) == ["app:1", "built:1"]
    assert found["app:1"] == (image.id, [layer.diff_id for layer in image.layers], OURS)
    built = inspect(docker, "built:1")
    assert found["built:1"] == (built["Id"], built["RootFS"]["Layers"], {k: built["Config"][k] for k in CONFIG_KEYS})
    assert runs["app:1"][:3] == (0, "\n".join(OURS_OUT) + "\n", "")
    assert runs["built:1"][:3] == (0, "\n".join(BUILT_OUT) + "\n", "")
    ours, built = runs["app:1"][3], runs["built:1"][3]
    assert "scratch" not in ours and ours[-2:] == ["/app:", "new.txt"]  # whiteout, opaque directory
    assert "built.txt" in built and "junk" not in built
