"""Issues 11 and 33: every bad input gives ONE line ``alignrec <command>: error: ...`` naming the file/item/key with
the documented exit code, a warning with the count, or a correct accept whose output is checked; never a traceback
unless ``--debug``. The HTTP service answers every client mistake with a 4xx JSON error naming the field."""

from __future__ import annotations

import re

import pytest

from alignrec import cli
from recdata.errors import UserError
from tests.cli.bad_inputs import ERROR_LINE, all_cases, classify, error_lines, run_case, run_cli
from tests.cli.bad_inputs_http import HTTP_CASES, Clients, build_store, classify_http

CASES = all_cases()


def test_the_table_covers_250_cases_and_every_subcommand():
    assert len(CASES) + len(HTTP_CASES) >= 250
    assert len({c.id for c in CASES} | {c.id for c in HTTP_CASES}) == len(CASES) + len(HTTP_CASES)  # unique ids


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(workspace, case):
    out = run_case(case, workspace)
    assert out.traceback == "", f"traceback escaped:\n{out.traceback}"
    assert out.check_failed == "", out.check_failed
    lines = error_lines(out.stderr)
    if case.expect == "error":
        assert out.code == case.code, (out.code, lines)
        assert len(lines) == 1, lines
        assert ERROR_LINE.match(lines[0]), lines[0]
        assert re.search(case.match, lines[0]), (case.match, lines[0])
        assert "Traceback" not in out.stderr
    elif case.expect == "warn":
        assert out.code == 0, lines
        assert any(re.search(case.match, w) for w in out.warnings), (case.match, out.warnings)
    else:
        assert out.code in (0, None), lines
    assert classify(case, out) == ("accepted" if case.expect == "ok" else "clear")


@pytest.fixture(scope="module")
def http_clients(workspace):
    pytest.importorskip("fastapi", reason="the server is the serve extra: pip install 'alignrec[serve]'")
    with Clients(build_store(workspace)) as clients:
        yield clients


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
def test_bad_http_input(http_clients, case):
    status, body = http_clients.send(case)
    kind, detail = classify_http(case, status, body)
    assert status == case.status, (status, body[:300])
    assert kind == ("accepted" if case.status < 400 else "clear"), detail


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
