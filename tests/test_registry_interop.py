"""Registries shared with the real tools: a private dockerd (Debian's
docker.io; 127.0.0.0/8 registries are insecure to it by default) pulls and
runs the image sandboxlib pushed, and sandboxlib pulls and runs one dockerd
pushed; a multi-platform index that ``skopeo copy --all`` pushed is pulled
for the host's platform (and run, root and rootless) and for another
(``platform=``), and the other platform's image pushed back by sandboxlib is
byte for byte the one skopeo put in the index."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import sandboxlib as sb
from sandboxlib.images.newimage import host_platform

from .dockerd import Dockerd
from .imagekit import busybox_layers, image_blobs, layer_tar, write_oci_layout
from .test_registry import EXPECTED, check_pull_and_run, pushed, registry  # noqa: F401 (fixtures)

OTHER_ARCH = "arm64" if host_platform()[1] != "arm64" else "amd64"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    daemon = Dockerd(str(tmp_path_factory.mktemp("docker")))
    yield daemon
    daemon.close()


def test_dockerd_pulls_and_runs_our_push(docker, pushed):
    ref, digest = pushed
    docker("pull", "-q", ref)
    seen = json.loads(docker("image", "inspect", ref).stdout)[0]
    assert f"{ref.rsplit(':', 1)[0]}@{digest}" in seen["RepoDigests"]
    out = docker("run", "--rm", "--network", "none", ref)
    assert (out.stdout.encode(), out.stderr) == (EXPECTED, "")


def test_our_pull_runs_what_dockerd_pushed(runner, store_dir, docker, registry, pushed):
    ref, _ = pushed
    theirs = f"{registry.host}/docker/{runner.mode}:1"
    docker("pull", "-q", ref)
    docker("tag", ref, theirs)
    pushed_by_docker = docker("push", theirs).stdout
    digest = pushed_by_docker.split("digest: ")[1].split()[0]
    got, names, repo_digests, code, out, *_ = runner(check_pull_and_run, store_dir, theirs)
    assert names == (theirs,) and repo_digests == (f"{theirs.rsplit(':', 1)[0]}@{digest}",)
    assert (code, out) == (0, EXPECTED)


# -- multi-platform indexes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index_pushed(registry, shared_dir, busybox_root):
    """An index of two images, the host's (busybox and a file naming it) and OTHER_ARCH's
    (the file only), pushed by ``skopeo copy --all``; returns (reference, index digest,
    {arch: manifest digest})."""
    blobs, entries, digests = {}, [], {}
    base = busybox_layers(busybox_root)[:1]
    for arch, words in ((host_platform()[1], "host"), (OTHER_ARCH, "other")):
        layer = layer_tar({"etc/": "dir/", "etc/platform": f"{words}\n".encode()})
        layers = base + [layer] if words == "host" else [layer]
        manifest, found = image_blobs(layers, {"Cmd": ["true"], "Env": ["PATH=/bin"]}, architecture=arch)
        blobs.update(found)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        blobs[digest], digests[arch] = manifest, digest
        entries.append(
            {
                "mediaType": MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    blobs[index_digest] = index
    top = str(shared_dir / "oci-index")
    write_oci_layout(
        top,
        blobs,
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": INDEX,
                    "digest": index_digest,
                    "size": len(index),
                    "annotations": {"org.opencontainers.image.ref.name": "multi"},
                }
            ],
        },
    )
    ref = f"{registry.host}/skopeo/multi:1"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{top}:multi",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(top)
    return ref, index_digest, digests


def check_pull_platforms(path, ref, other):
    store = sb.ImageStore(path)
    host = store.pull(ref)
    with sb.Container(image=ref, image_store=path) as c:
        seen = c.run(["cat", "/etc/platform"]).stdout
    others = sb.ImageStore(os.path.join(path, "other"))
    arm = others.pull(ref, platform=f"linux/{other}")
    unpacked = [sorted(os.listdir(os.path.join(s.path, "layers"))) for s in (store, others)]
    return host.digest, host.architecture, host.repo_digests, seen, arm.digest, arm.architecture, unpacked


def test_index_pushed_by_skopeo_is_pulled_per_platform(runner, store_dir, index_pushed):
    ref, index_digest, digests = index_pushed
    host, host_arch, repo_digests, seen, other, other_arch, unpacked = runner(
        check_pull_platforms, store_dir, ref, OTHER_ARCH
    )
    assert (host, host_arch, seen) == (digests[host_platform()[1]], host_platform()[1], b"host\n")
    assert repo_digests == (f"{ref.rsplit(':', 1)[0]}@{index_digest}",)  # the digest the tag names
    assert (other, other_arch) == (digests[OTHER_ARCH], OTHER_ARCH)
    assert [len(keys) for keys in unpacked] == [1, 0]  # the pull unpacks only what runs here


def test_image_of_an_index_pushed_back_is_what_skopeo_reads(registry, index_pushed, tmp_path):
    ref, _, digests = index_pushed
    store = sb.ImageStore(str(tmp_path / "store"))
    store.pull(ref, platform=f"linux/{OTHER_ARCH}")
    back = f"{registry.host}/ours/{OTHER_ARCH}:1"
    assert store.push(ref, back) == digests[OTHER_ARCH]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{back}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digests[OTHER_ARCH]
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "--override-arch",
            OTHER_ARCH,
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{back}",
            f"oci:{tmp_path / 'copy'}:x",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
