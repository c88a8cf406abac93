"""help(sb.run) and help(sb.Container) document every option with a readable
default, from one source: ContainerConfig's docstring (issue 12)."""

from __future__ import annotations

import pickle
import pydoc
import subprocess

import attrs
import pytest

import sandboxlib as sb
from sandboxlib.config import ContainerConfig


@pytest.mark.parametrize("subject", [sb.run, sb.Container])
def test_help_documents_every_option(subject):
    text = pydoc.render_doc(subject, renderer=pydoc.plaintext)
    args = text.split("Args:", 1)[1]
    for field in attrs.fields(ContainerConfig):
        assert f"{field.name}: " in args, field.name
    assert "Default: 'none'" in args  # network: its value, not <Network.NONE: 'none'>
    assert "rootless, root is you" in args  # uid_map's own words, not "see idmap"


def test_stdio_defaults_read_as_names():
    text = pydoc.render_doc(sb.run, renderer=pydoc.plaintext)
    assert "stdout: 'StdioSpec' = PIPE" in text and "= -1" not in text
    assert sb.PIPE == subprocess.PIPE and sb.STDOUT == subprocess.STDOUT and sb.DEVNULL == subprocess.DEVNULL
    assert type(pickle.loads(pickle.dumps(sb.PIPE))) is int
    assert sb.run(["echo", "hi"], stdout=subprocess.PIPE).stdout == b"hi\n"
