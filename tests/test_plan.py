"""The PLAN message: its static part is built once per configuration and
reused (native/plan.py); what differs per container (hostname, fault) must
still land in every message, read as sbx-init reads it (offsets into the
strings)."""

from __future__ import annotations

import pytest

import sandboxlib as sb
from sandboxlib.native import plan
from sandboxlib.native.binding import JOIN_NAMESPACES, lib
from sandboxlib.rootfs.layout import layout

_HEADER, _RECORD = plan._HEADER, plan._RECORD


def _read(message: bytes) -> dict:
    """The message as sbx-init's plan.c reads it."""
    fields = _HEADER.unpack_from(message)
    (kind, flags, newnet, fault_step, fault_errno, hostname, base_dir, rootfs, n_ops, strings_len) = fields[:10]
    filter_len, init_caps, init_filter_len, _propagation = fields[10:14]
    joins = fields[14 : 14 + len(JOIN_NAMESPACES)]
    launcher_len, clone3_len = fields[14 + len(JOIN_NAMESPACES) : 16 + len(JOIN_NAMESPACES)]
    body = len(message) - _HEADER.size
    assert body == filter_len + init_filter_len + launcher_len + clone3_len + n_ops * _RECORD.size + strings_len
    strings = message[len(message) - strings_len :]
    assert strings.endswith(b"\0")

    def at(offset: int):
        return None if offset == lib.SBX_NO_STRING else strings[offset : strings.index(b"\0", offset)].decode()

    records = message[len(message) - strings_len - n_ops * _RECORD.size : len(message) - strings_len]
    ops = [_RECORD.unpack_from(records, i * _RECORD.size) for i in range(n_ops)]
    return {
        "kind": kind,
        "flags": flags,
        "newnet": newnet,
        "fault": (fault_step, fault_errno),
        "hostname": at(hostname),
        "base_dir": at(base_dir),
        "rootfs": at(rootfs),
        "joins": [at(j) for j in joins],
        "init_caps": init_caps,
        "ops": [(k, f, at(s), at(t), at(d)) for k, f, s, t, d in ops],
    }


def _build(ops, **options) -> bytes:
    defaults = {
        "rootfs": None,
        "read_only": False,
        "hostname": "box",
        "userns": True,
        "netns": True,
        "set_groups": True,
    }
    return plan.build_plan(ops=ops, **{**defaults, **options})


@pytest.fixture
def ops():
    return layout(sb.ContainerConfig())


def test_each_container_gets_its_own_hostname_and_fault(ops):
    first = _read(_build(ops, hostname="a"))
    second = _read(_build(ops, hostname="b" * 64, fault=(3, 5)))
    third = _read(_build(ops, hostname=None))
    assert (first["hostname"], second["hostname"], third["hostname"]) == ("a", "b" * 64, None)
    assert (first["fault"], second["fault"], third["fault"]) == ((0, 0), (3, 5), (0, 0))
    assert first["ops"] == second["ops"] == third["ops"]  # the shared part, read through each one's offsets
    assert first["base_dir"] == plan.BASE_DIR and first["rootfs"] is None
    assert [(op[2], op[3], op[4]) for op in first["ops"]] == [(op.source, op.target, op.data) for op in ops]


def test_cached_message_equals_a_fresh_one(ops):
    options = {
        "hostname": "cached",
        "seccomp_filter": b"\0" * 64,
        "init_filter": b"\1" * 16,
        "init_caps": 7,
        "launcher": True,
    }
    cached = _build(ops, **options)
    assert _build(ops, **options) == cached
    plan._STATIC.clear()
    assert _build(ops, **options) == cached


def test_what_differs_is_not_taken_from_another_configuration(ops, tmp_path):
    root = str(tmp_path)
    plain = _read(_build(ops))
    other = _read(_build(ops, rootfs=root, read_only=True, netns=False, init_caps=5))
    joined = _read(_build(ops, netns=False, joins={"ipc": "/proc/1/ns/ipc"}))
    equal_copy = _read(_build(tuple(list(ops)[:-1]), hostname="copy"))  # another layout: its own entry
    assert (plain["rootfs"], other["rootfs"]) == (None, root)
    assert plain["flags"] & lib.SBX_PLAN_READ_ONLY_ROOT == 0 and other["flags"] & lib.SBX_PLAN_READ_ONLY_ROOT
    assert (plain["newnet"], other["newnet"]) == (lib.CLONE_NEWNET, 0)
    assert (plain["init_caps"], other["init_caps"]) == (0, 5)
    assert plain["joins"] == [None] * len(JOIN_NAMESPACES)
    assert joined["joins"] == ["/proc/1/ns/ipc" if kind == "ipc" else None for kind in JOIN_NAMESPACES]
    assert len(equal_copy["ops"]) == len(ops) - 1 and equal_copy["hostname"] == "copy"


def test_too_many_mounts_is_still_refused():
    ops = tuple(sb.Mount.tmpfs(f"/t{i}") for i in range(lib.SBX_MAX_MOUNTS + 1))
    with pytest.raises(sb.ConfigError) as info:
        _build(layout(sb.ContainerConfig(mounts=ops)))
    assert info.value.field == "mounts"
