"""The message layouts Python packs with are csrc/sbx.h's, through cffi:
every field lands at the compiler's offset (a value packed by Python reads
back the same through the C struct)."""

from __future__ import annotations

import pytest

from sandboxlib.native import binding, plan, protocol

LAYOUTS = {
    "struct sbx_exec_hdr": protocol._HEADER,
    "struct sbx_rlimit": protocol._RLIMIT,
    "struct sbx_signal_msg": protocol._SIGNAL,
    "struct sbx_reply": protocol._REPLY,
    "struct sbx_plan_hdr": plan._HEADER,
    "struct sbx_mount_rec": plan._RECORD,
    "struct sbx_report": binding.REPORT,
}


def _scalars(cdata, ctype):
    values = []
    for name, field in ctype.fields:
        value = getattr(cdata, name)
        values += _scalars(value, field.type) if field.type.kind == "struct" else [value]
    return values


@pytest.mark.parametrize("cname", sorted(LAYOUTS))
def test_python_layout_is_the_compilers(cname):
    layout, ffi = LAYOUTS[cname], binding.ffi
    ctype = ffi.typeof(cname)
    assert layout.size == ffi.sizeof(ctype)
    values = [i + 1 for i in range(len(_scalars(ffi.new(cname + " *")[0], ctype)))]
    packed = bytearray(layout.pack(*values))  # kept alive while the C view reads it
    assert _scalars(ffi.from_buffer(cname + " *", packed)[0], ctype) == values


def test_constants_are_the_headers():
    lib = binding.lib
    assert (protocol.MSG_EXEC, protocol.REPLY_EXITED, protocol.MAX_REQUEST, plan.NO_STRING) == (
        lib.SBX_MSG_EXEC,
        lib.SBX_REPLY_EXITED,
        lib.SBX_MAX_REQUEST,
        lib.SBX_NO_STRING,
    )
