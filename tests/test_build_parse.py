"""The Dockerfile parser and Docker's substitution rules, without containers."""

from __future__ import annotations

import pytest

from sandboxlib.build.context import Ignore, compile_pattern
from sandboxlib.build.parser import parse
from sandboxlib.build.stages import needed, split_stages, target_stage
from sandboxlib.build.substitution import SubstitutionError, expand, expand_words
from sandboxlib.errors import BuildError

ENV = {"A": "a", "EMPTY": "", "SPACE": "x y"}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("$A", "a"),
        ("${A}b", "ab"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${A}x}", "ax"),
        ("'$A'", "$A"),
        ('"$A $SPACE"', "a x y"),
        ("\\$A", "$A"),
        ('"\\$A"', "$A"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("$1", "$1"),
        ("$UNSET", ""),
    ],
)
def test_substitution_rules(word, expected):
    assert expand(word, ENV) == expected


def test_substitution_errors_and_words():
    with pytest.raises(SubstitutionError, match="must be set"):
        expand("${UNSET:?must be set}", ENV)
    with pytest.raises(SubstitutionError, match="unterminated"):
        expand("'open", ENV)
    assert expand_words("a \"b c\" ${A}d '$A'", ENV) == ["a", "b c", "ad", "$A"]
    assert expand("`$A", ENV, escape="`") == "$A"


DOCKERFILE = """# syntax=docker/dockerfile:1
# escape=\\

# a comment
FROM busybox AS base
RUN echo one \\
# a comment inside a continuation
    two \\

    three
COPY <<EOF <<-'TWO' /dst/
hello $A
EOF
\tkept $A
\tTWO
RUN ["echo", "exec form"]
run lower case
"""


def test_parse_continuations_comments_heredocs():
    parsed = parse(DOCKERFILE, "Dockerfile")
    assert parsed.directives == {"syntax": "docker/dockerfile:1", "escape": "\\"}
    keywords = [(i.keyword, i.line) for i in parsed.instructions]
    assert keywords == [("FROM", 5), ("RUN", 6), ("COPY", 11), ("RUN", 16), ("RUN", 17)]
    run = parsed.instructions[1]
    assert run.args == "echo one     two     three" and run.exec_form is None
    copy = parsed.instructions[2]
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [
        ("EOF", "hello $A\n", True),
        ("TWO", "kept $A\n", False),
    ]
    assert parsed.instructions[3].exec_form == ("echo", "exec form")


def test_escape_directive_backtick():
    parsed = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\n", "Dockerfile")
    assert parsed.instructions[1].args == "dir c:\\   && echo hi"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("FROM x\nFROOM y\n", 2, "unknown instruction 'FROOM'"),
        ("FROM x\nRUN <<EOF\nno end\n", 2, "not terminated"),
        ("RUN x\n", 1, "only ARG may come before the first FROM"),
        ("FROM x AS a\nFROM y AS a\n", 2, "used twice"),
    ],
)
def test_syntax_errors_name_file_and_line(text, line, message):
    with pytest.raises(BuildError) as caught:
        split_stages(parse(text, "/ctx/Dockerfile"), "/ctx/Dockerfile")
    assert caught.value.file == "/ctx/Dockerfile" and caught.value.line == line
    assert str(caught.value).startswith(f"/ctx/Dockerfile:{line}: ") and message in str(caught.value)


def test_target_needs_only_its_stages():
    text = "FROM a AS one\nFROM b AS two\nCOPY --from=one / /\nFROM c AS three\nFROM two\n"
    _, stages = split_stages(parse(text, "D"), "D")
    assert [s.label for s in needed(stages, target_stage(stages, None, "D"))] == ["one", "two", "stage-3"]
    assert [s.label for s in needed(stages, target_stage(stages, "three", "D"))] == ["three"]
    with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
        target_stage(stages, "nope", "D")


@pytest.mark.parametrize(
    "patterns, path, ignored",
    [
        (["*.log"], "a.log", True),
        (["*.log"], "dir/a.log", False),  # anchored at the root, unlike gitignore
        (["**/*.log"], "dir/sub/a.log", True),
        (["**/*.log"], "a.log", True),
        (["secret"], "secret/key", True),  # a directory excludes what is below it
        (["*.log", "!keep.log"], "keep.log", False),
        (["dir", "!dir/keep"], "dir/keep", False),
        (["dir", "!dir/keep"], "dir/other", True),
        (["a?c"], "abc", True),
        (["[a-b]x"], "bx", True),
        (["dir/**"], "dir/x/y", True),
    ],
)
def test_dockerignore_rules(patterns, path, ignored):
    rules = Ignore(tuple((compile_pattern(p.lstrip("!")), p.startswith("!")) for p in patterns))
    assert rules.ignored(path) is ignored


def test_printed_progress():
    import io

    from sandboxlib.build.progress import BuildEvent, reporter

    out = io.StringIO()
    show = reporter(True, out)
    show(BuildEvent(kind="step", stage="app", step=1, total=2, text="COPY a /a"))
    show(BuildEvent(kind="cached", stage="app", text="sha256:x"))
    show(BuildEvent(kind="step", stage="app", step=2, total=2, text="RUN make"))
    show(BuildEvent(kind="output", stage="app", text="compiling"))
    show(BuildEvent(kind="done", text="sha256:id"))
    lines = out.getvalue().splitlines()
    assert lines[:4] == ["[app 1/2] COPY a /a", "  CACHED", "[app 2/2] RUN make", "  compiling"]
    assert lines[4].startswith("built sha256:id in ") and lines[4].endswith(" s (1 of 2 steps cached)")
    assert reporter(False) is reporter(None)  # nothing printed


def test_printed_progress_on_a_terminal():
    """On a terminal (a real pty) the same events are styled: bold steps, cyan CACHED, dim output."""
    import os

    from sandboxlib.build.progress import BuildEvent, reporter

    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            show = reporter(True, tty)
            show(BuildEvent(kind="step", stage="app", step=1, total=2, text="COPY a /a"))
            show(BuildEvent(kind="cached", stage="app", text="sha256:x"))
            show(BuildEvent(kind="output", stage="app", text="compiling"))
        seen = os.read(master, 4096).decode()
    finally:
        os.close(master)
    assert "\033[1m[app 1/2]\033[0m COPY a /a" in seen
    assert "\033[36mCACHED\033[0m" in seen and "\033[2mcompiling\033[0m" in seen
