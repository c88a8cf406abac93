"""Image configs as users give them (issue 12): checked on import and commit,
Docker's keys with lowercase aliases, the same everywhere."""

from __future__ import annotations

import pytest

import sandboxlib as sb

from .imagekit import add_image, busybox_layers

BAD = [
    ({"Cmd": "sh"}, "config['Cmd']", "such as ['sh']"),
    ({"Entrypoint": ["sh", 1]}, "config['Entrypoint']", "list of strings"),
    ({"Env": ["NOEQUALS"]}, "config['Env']", "NAME=VALUE"),
    ({"WorkingDir": "app"}, "config['WorkingDir']", "absolute"),
    ({"User": 1000}, "config['User']", "string"),
    ({"ExposedPorts": ["http"]}, "config['ExposedPorts']", "80/tcp"),
    ({"Labels": {"a": 1}}, "config['Labels']", "strings"),
    ({"Volumes": {"/x": {}}}, "config['Volumes']", "Cmd, Entrypoint, Env, WorkingDir, User, ExposedPorts, Labels"),
    ({"Cmd": ["a"], "cmd": ["b"]}, "config['cmd']", "twice"),
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
            c.commit("bb:3", changes={"volumes": ["/x"]})
    return img.config, sb.run(None, image="bb:2", image_store=store.path).stdout


def test_commit_takes_dockers_keys(runner, store_dir, busybox_root):
    config, out = runner(check_commit_with_dockers_keys, store_dir, busybox_root)
    assert config == {"Cmd": ["echo", "committed"], "WorkingDir": "/tmp"} and out == b"committed\n"
