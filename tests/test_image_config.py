"""Image configs as users give them (issue 12): checked on import and commit,
Docker's keys with lowercase aliases, the same everywhere."""

from __future__ import annotations

import os

import pytest

import sandboxlib as sb

from .conftest import sandboxlib_cli
from .imagekit import add_image, busybox_layers, tar_directory

BAD = [
    ({"Cmd": "sh"}, "config['Cmd']", "such as ['sh']"),
    ({"Entrypoint": ["sh", 1]}, "config['Entrypoint']", "list of strings"),
    ({"Env": ["NOEQUALS"]}, "config['Env']", "NAME=VALUE"),
    ({"WorkingDir": "app"}, "config['WorkingDir']", "absolute"),
    ({"User": 1000}, "config['User']", "string"),
    ({"ExposedPorts": ["http"]}, "config['ExposedPorts']", "80/tcp"),
    ({"Labels": {"a": 1}}, "config['Labels']", "strings"),
    ({"Volumes": ["data"]}, "config['Volumes']", "absolute paths"),
    (
        {"Healthcheck": {}},
        "config['Healthcheck']",
        "Cmd, Entrypoint, Env, WorkingDir, User, ExposedPorts, Labels, Volumes",
    ),
    ({"Cmd": ["a"], "cmd": ["b"]}, "config['cmd']", "twice"),
    ({"Env": ["A=\x00"]}, "config['Env']", "NUL"),
    ({"WorkingDir": "/a\x00b"}, "config['WorkingDir']", "NUL"),
    ({"Labels": {"a": "\x00"}}, "config['Labels']", "NUL"),
]


@pytest.mark.parametrize("config,field,words", BAD)
def test_bad_configs_are_refused_on_import(tmp_path, busybox_root, config, field, words):
    store = sb.ImageStore(str(tmp_path / "store"))
    with pytest.raises(sb.ConfigError) as caught:
        store.from_directory(busybox_root, "bad:1", config=config)
    assert caught.value.field == field and words in str(caught.value)
    assert store.list() == []


def test_lowercase_aliases_mean_dockers_keys(tmp_path, busybox_root):
    store = sb.ImageStore(str(tmp_path / "store"))
    img = store.from_directory(
        busybox_root,
        "ok:1",
        config={
            "cmd": ["sh", "-c", "echo $A; pwd"],
            "env": {"A": "1"},
            "workdir": "/tmp",
            "user": "root",
            "exposedports": ["80"],
            "labels": {"k": "v"},
        },
    )
    assert img.config == {
        "Cmd": ["sh", "-c", "echo $A; pwd"],
        "Env": ["A=1"],
        "WorkingDir": "/tmp",
        "User": "root",
        "ExposedPorts": {"80/tcp": {}},
        "Labels": {"k": "v"},
    }
    assert sb.run(None, image="ok:1", image_store=store.path).stdout == b"1\n/tmp\n"


def check_commit_with_dockers_keys(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"], config={"Cmd": ["sh"]})
    with sb.Container(image="bb:1", image_store=store.path) as c:
        img = c.commit("bb:2", changes={"Cmd": ["echo", "committed"], "WorkingDir": "/tmp"})
        with pytest.raises(sb.ConfigError, match="Cmd, Entrypoint"):
            c.commit("bb:3", changes={"healthcheck": {}})
    return img.config, sb.run(None, image="bb:2", image_store=store.path).stdout


def test_commit_takes_dockers_keys(runner, store_dir, busybox_root):
    config, out = runner(check_commit_with_dockers_keys, store_dir, busybox_root)
    assert config == {"Cmd": ["echo", "committed"], "WorkingDir": "/tmp"} and out == b"committed\n"


# -- import --change: Dockerfile instructions ---------------------------------------------------------
CHANGES = [
    'ENTRYPOINT ["sh", "-c"]',
    'CMD ["echo A=$A B=$B; pwd; id -u"]',
    'ENV A=1 B="two words"',
    "env C 3 and more",
    "WORKDIR /home",
    "WORKDIR app",
    "USER 0",
    "EXPOSE 80 53/udp",
    'LABEL org.example.team="the team" tier=web',
    "VOLUME /data /cache",
]


def test_import_change_applies_dockerfile_instructions(tmp_path, busybox_root):
    tar = tar_directory(busybox_root, str(tmp_path / "rootfs.tar"))
    store = str(tmp_path / "store")
    args = [a for change in CHANGES for a in ("--change", change)]
    out = sandboxlib_cli("import", "--store", store, *args, tar, "changed:1", text=True)
    assert out.returncode == 0, out.stderr
    config = sb.ImageStore(store).get("changed:1").config
    assert config["Entrypoint"] == ["sh", "-c"] and config["Cmd"] == ["echo A=$A B=$B; pwd; id -u"]
    assert config["Env"] == ["A=1", "B=two words", "C=3 and more"]
    assert (config["WorkingDir"], config["User"]) == ("/home/app", "0")
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Labels"] == {"org.example.team": "the team", "tier": "web"}
    assert config["Volumes"] == {"/data": {}, "/cache": {}}
    result = sb.run(None, image="changed:1", image_store=store)
    assert result.stdout == b"A=1 B=two words\n/home/app\n0\n"


def test_shell_forms_and_config_then_changes(tmp_path, busybox_root):
    store = sb.ImageStore(str(tmp_path / "store"))
    tar = tar_directory(busybox_root, str(tmp_path / "rootfs.tar"))
    image = store.import_rootfs(
        tar, "shell:1", config={"Env": ["A=0", "PATH=/bin"]}, changes=["CMD echo $A", "ENV A=1", "cmd [not json"]
    )
    assert image.config["Cmd"] == ["/bin/sh", "-c", "[not json"]  # as Docker: not JSON, so the shell form
    assert image.config["Env"] == ["A=1", "PATH=/bin"]


@pytest.mark.parametrize(
    "change, words",
    [
        ("RUN apt-get update", "'RUN' is not an instruction import can apply (one of CMD, ENTRYPOINT, ENV"),
        ("COPY . /app", "RUN, COPY and the like need a build"),
        ("CMD", "CMD needs an argument"),
        ('CMD ["sh", 1]', "JSON array of strings"),
        ("LABEL novalue", "KEY=VALUE pairs, got 'novalue'"),
        ("EXPOSE http", "80/tcp"),
        ("VOLUME data", "absolute paths"),
        ("ENV A='unclosed", "No closing quotation"),
    ],
)
def test_bad_changes_are_config_errors(tmp_path, busybox_root, change, words):
    store = sb.ImageStore(str(tmp_path / "store"))
    tar = tar_directory(busybox_root, str(tmp_path / "rootfs.tar"))
    with pytest.raises(sb.ConfigError) as caught:
        store.import_rootfs(tar, "bad:1", changes=["USER 1", change])
    assert caught.value.field.startswith("changes[1]") and words in str(caught.value)
    assert store.list() == []


def test_cli_names_a_bad_change(tmp_path, busybox_root):
    tar = tar_directory(busybox_root, str(tmp_path / "rootfs.tar"))
    out = sandboxlib_cli("import", "--store", str(tmp_path / "store"), "-c", "RUN true", tar, text=True)
    assert out.returncode != 0 and "'RUN' is not an instruction import can apply" in out.stderr


@pytest.mark.parametrize(
    "key,value", [("Env", ["A=\x00"]), ("WorkingDir", "/a\x00"), ("User", "\x00"), ("Cmd", ["a\x00"])]
)
def test_a_nul_byte_in_a_stored_images_config_is_named_at_start(tmp_path, busybox_root, key, value):
    """An image that never passed these checks (pulled, loaded, or an import's WORKDIR
    change before them): its start failed with the init's bare EINVAL ("exec request
    ... step REQUEST"), the daemon's 500; now the image config's key is named."""
    store = sb.ImageStore(str(tmp_path / "store"))
    add_image(store, busybox_layers(busybox_root), ["nul:1"], {"Cmd": ["true"], key: value})
    with pytest.raises(sb.ImageFormatError, match=f"image config {key}.*NUL"):
        sb.run(None, image="nul:1", image_store=store.path)
    assert os.listdir(os.path.join(store.path, "leases")) == []  # (the refused start leased nothing)
