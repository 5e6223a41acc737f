"""Issue 11: every bad input gives ONE line ``alignrec <command>: error: ...`` naming the file/item/key with the
documented exit code, or a warning with the count; never a traceback unless ``--debug``."""

from __future__ import annotations

import re

import pytest

from alignrec import cli
from recdata.errors import UserError
from tests.cli.bad_inputs import CASES, classify, error_lines, run_case, run_cli


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(workspace, case):
    out = run_case(case, workspace)
    assert out.traceback == "", f"traceback escaped:\n{out.traceback}"
    lines = error_lines(out.stderr)
    if case.expect == "error":
        assert out.code == case.code, (out.code, lines)
        assert len(lines) == 1, lines
        assert re.match(r"alignrec [a-z ]+: error: ", lines[0]), lines[0]
        assert re.search(case.match, lines[0]), (case.match, lines[0])
        assert "Traceback" not in out.stderr
    else:
        assert out.code == 0, lines
        assert any(re.search(case.match, w) for w in out.warnings), (case.match, out.warnings)
    assert classify(case, out) == "clear"


def test_error_line_names_the_full_subcommand(workspace):
    out = run_cli(["vocab", "validate", str(workspace.root / "missing")])
    assert error_lines(out.stderr)[0].startswith("alignrec vocab validate: error: ")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(workspace, monkeypatch, how):
    argv = ["data", "stats", str(workspace.root / "missing")]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("ALIGNREC_DEBUG", "1")
    with pytest.raises(UserError, match="missing"):
        cli.main(argv)


def test_unexpected_exception_keeps_its_traceback(monkeypatch):
    """Only our own error family is shortened: a bug elsewhere must stay visible."""
    def broken(args, argv):
        raise KeyError("bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _rebuilt(parser, broken))
    with pytest.raises(KeyError):
        cli.main(["data", "stats", "x"])


def _rebuilt(parser, handler):
    for action in parser._subparsers._group_actions:
        data = action.choices["data"]
        for sub in data._subparsers._group_actions:
            sub.choices["stats"].set_defaults(handler=handler)
    return parser
