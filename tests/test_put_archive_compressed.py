"""put_archive takes gzip and zstd compressed tars, as Docker does (issue 12)."""

from __future__ import annotations

import gzip
import sys

import pytest
import zstandard

import sandboxlib as sb

from .imagekit import layer_tar

TAR = layer_tar({"in/": "dir/", "in/f": b"packed\n"})


def check_compressed() -> dict:
    found = {}
    with sb.Container() as c:
        for name, data in (
            ("gzip", gzip.compress(TAR)),
            ("zstd", zstandard.ZstdCompressor().compress(TAR)),
            ("plain", TAR),
        ):
            c.put_archive("/tmp", data)
            found[name] = c.read_file("/tmp/in/f")
            c.run(["rm", "-r", "/tmp/in"])
        with pytest.raises(sb.ImageFormatError, match="gzip"):
            c.put_archive("/tmp", gzip.compress(TAR)[:-12] + b"garbage!")
    return found


def test_put_archive_takes_gzip_and_zstd(runner):
    assert runner(check_compressed) == {"gzip": b"packed\n", "zstd": b"packed\n", "plain": b"packed\n"}


def test_zstd_without_the_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    with sb.Container() as c:
        with pytest.raises(sb.UnsupportedError, match=r"zstd-compressed put_archive data.*sandboxlib\[zstd\]"):
            c.put_archive("/tmp", zstandard.ZstdCompressor().compress(TAR))
