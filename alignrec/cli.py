"""``alignrec``: one command whose subcommands front every stage.

Each stage owns a ``cli`` module with ``register(subparsers)``; a subcommand's handler receives the
argv that follows it and parses its own dataclass config (``recdata.config.parse_config``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from recdata.errors import UserError, cli_error_line

# Modules that contribute subcommands, in --help order. A module that is not present yet is skipped.
STAGE_CLI_MODULES = (
    "recdata.cli",
    "tokenization.cli",
    "sft_tasks.cli",
    "alignrec.knowledge.cli",
    "alignrec.llm4msr.cli",
    "trainer.cli",
    "inference.cli",
    "inference.recommend_cli",
    "inference.serve.cli",
    "alignrec.pipeline_cli",
    "alignrec.tune_cli",
    "alignrec.recipe_tune_cli",
)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (``alignrec data: error: ...; see alignrec data --help``)
    like every other error of the CLI, not a usage dump; the subcommand parsers inherit it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="alignrec", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an error (or ALIGNREC_DEBUG=1).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGE_CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``data prepare`` from the parsed namespace: the command and every nested ``*_command`` choice."""
    nested = [v for k, v in vars(args).items() if k.endswith("_command") and k != "command" and v]
    return " ".join([args.command, *nested])


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; a ``UserError`` becomes one line ``alignrec <command>: error: ...`` (``--debug``: traceback)."""
    from recdata.config import command_prog

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"{args.command}: missing subcommand")
    name = command_name(args)
    try:
        with command_prog(f"alignrec {name}"):
            return int(handler(args, rest) or 0)
    except (UserError, OSError) as exc:  # an OSError only with a known errno (cli_error_line), else re-raised
        line = cli_error_line(exc)
        if line is None or args.debug or os.environ.get("ALIGNREC_DEBUG", "") not in ("", "0"):
            raise
        print(f"alignrec {name}: error: {line[0]}", file=sys.stderr)  # one line, whatever the message holds
        return line[1]


if __name__ == "__main__":
    sys.exit(main())
