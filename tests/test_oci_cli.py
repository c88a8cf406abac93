"""The runtime's command line: the parser of the verb alone (what each
command builds, for its start-up time) reads every command line as the whole
parser does, and a non-verb still gets argparse's own answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandboxlib.oci import cli

COMMAND_LINES = [
    ["create", "--bundle", "/b", "--pid-file", "/p", "c1"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "create", "-b", "/b", "c1"],
    ["--root=/r", "--log-format=json", "start", "c1"],
    ["--log-f", "json", "kill", "--all", "c1", "KILL"],  # (a prefix of --log-format, as argparse takes it)
    ["--rootless", "true", "--debug", "delete", "--force", "c1"],
    ["--log", "create", "state", "c1"],  # (an option's value that is a verb's name)
    ["exec", "--tty", "-e", "A=1", "c1", "--", "sh", "-c", "true"],
    ["update", "--memory", "1000000", "c1"],
    ["ps", "--format", "json", "c1"],
    ["features"],
    ["spec", "--rootless"],
    ["list", "-q"],
]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_verb_parser_reads_as_the_whole_parser(argv):
    assert cli._parser(cli._verb_of(argv)).parse_args(argv) == cli._parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus", "c1"], "argument COMMAND: invalid choice: 'bogus' (choose from 'create', 'run',"),
        (["create"], "sandboxlib-runtime create: error: the following arguments are required: id"),
        (["--root", "/r"], "no command given (see --help)"),
    ],
)
def test_command_line_errors(argv, message):
    run = subprocess.run([sys.executable, "-m", "sandboxlib.oci", *argv], capture_output=True, text=True)
    assert run.returncode != 0
    assert message in run.stderr


def test_help_lists_every_verb():
    run = subprocess.run([sys.executable, "-m", "sandboxlib.oci", "--help"], capture_output=True, text=True, check=True)
    for verb in ("create", "run", "start", "state", "kill", "delete", "exec", "ps", "events", "update", "list"):
        assert f"    {verb} " in run.stdout
