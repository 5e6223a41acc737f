"""Config parsing shared by every entry point: dataclasses + ``HfArgumentParser`` + optional YAML.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags. Unknown YAML keys raise, naming
the file and the keys, so a typo never silently falls back to a default. YAML values are checked against the
field's type and choices as strictly as a flag would be (``num_levels: 3.7`` is an error, not a later TypeError).
Every problem is a ``ConfigError`` (exit 2, one line), never argparse's usage dump or a traceback. Parsed from a
command line (no ``config`` dict), a device field (``--device cuda``) is also checked against this machine
(``recdata.devices``), so an unusable device is one line before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import enum
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from recdata.errors import ConfigError

# The running subcommand ("alignrec data prepare"), set by ``alignrec.cli``: the prog of every usage line.
_PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("alignrec_prog", default=None)


@contextlib.contextmanager
def command_prog(prog: str) -> Iterator[None]:
    """Within this block, ``parse_config`` names ``prog`` in its usage line and ``--help``."""
    token = _PROG.set(prog)
    try:
        yield
    finally:
        _PROG.reset(token)


def current_prog() -> str | None:
    return _PROG.get()


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """``--config FILE`` names no file: a usage error (exit 2) that is still a ``FileNotFoundError``."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys it brings may be overridden below
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice (first on line "
                                                        f"{seen[key] + 1}); keep one", key_node.start_mark)
        except TypeError:  # an unhashable key: construct_mapping names it
            continue
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; a missing, non-UTF-8 or malformed file, a repeated key, a key that is
    not a name or a top level that is not a mapping is one ``ConfigError`` naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileNotFoundError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {where} is not valid YAML ({problem}); fix the syntax") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value, got {type(data).__name__}")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"config file {path}: key {odd[0]!r} is not a field name; write field: value (see --help)")
    return data


def _raise_config_error(message: str) -> None:
    raise ConfigError(f"{message} (see --help)")


def _type_name(typ: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(typ, getattr(typ, "__name__", str(typ)))


def _check_value(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """``value`` (from YAML or a dict) as the flag would parse it; ConfigError naming ``key`` when it cannot be."""
    from transformers.hf_argparser import string_to_bool

    if value is None:
        if action.default is None or action.required:
            return value
        raise ConfigError(f"{source}: {key}: null is not allowed (default {action.default!r}); give a value or remove "
                          "the key")
    many = action.nargs in ("+", "*")
    if many and not isinstance(value, list):
        raise ConfigError(f"{source}: {key}: {value!r} must be a list (YAML [a, b] or one '- a' per line)")
    out = []
    for item in value if many else [value]:
        typ = action.type
        if typ is string_to_bool:
            if isinstance(item, str) and item.lower() in ("true", "false", "yes", "no", "1", "0"):
                item = string_to_bool(item)
            ok = isinstance(item, bool)
            expected = "true or false"
        elif typ is int:
            ok = isinstance(item, int) and not isinstance(item, bool)
            expected = _type_name(int)
        elif typ is float:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool)
            item = float(item) if ok else item
            expected = _type_name(float)
        elif typ is str:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)  # YAML reads `name: 2024` as a number
            ok, expected = True, ""  # some str fields take structured YAML (weights: {seqrec: 1}); __post_init__ checks
        else:
            ok, expected = True, ""
        if not ok:
            raise ConfigError(f"{source}: {key}: {item!r} is not {expected}; fix the value")
        if action.choices is not None and item not in action.choices:
            raise ConfigError(f"{source}: {key}: {item!r} is not one of {list(action.choices)}")
        out.append(item)
    return out if many else out[0]


def parse_config(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    config_source: str = "<dict>",
) -> tuple[Any, ...]:
    """Parse ``argv`` (plus ``--config YAML`` or an in-memory ``config`` dict) into the given dataclasses."""
    parser = build_parser(dataclass_types)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.error = _raise_config_error  # type: ignore[method-assign]
    known, rest = pre.parse_known_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = dict(config or {})
    if known.config:
        values.update(load_yaml(known.config))
        config_source = known.config

    dests = {action.dest for action in parser._actions} - {"help", "config"}
    unknown = sorted(set(values) - dests)
    if unknown:
        hints = _close_matches(unknown, sorted(dests))
        raise ConfigError(
            f"unknown config key(s) {unknown} in {config_source}{hints}; valid keys are the flags listed by --help"
        )
    reject_unknown_flags(parser, rest)
    if values:
        checked: set[str] = set()
        for action in parser._actions:
            if action.dest in values:
                action.required = False
                if action.dest not in checked and action.type is not None:  # --no_X shares the dest, has no type
                    values[action.dest] = _check_value(action, action.dest, values[action.dest], config_source)
                    checked.add(action.dest)
        parser.set_defaults(**values)
    if config is not None:  # a config section: name the missing keys as keys of that section, not as flags
        missing = [a.dest for a in parser._actions if a.required and not set(a.option_strings) & set(rest)]
        if missing:
            raise ConfigError(f"{config_source}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required; "
                              f"add `{missing[0]}: ...` there")
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a dataclass __post_init__ rejected a value
        where = f" (flags + {config_source})" if values else ""
        raise ConfigError(f"{exc}{where}") from exc
    if remaining:
        raise ConfigError(f"unexpected argument(s) {remaining}: every value must follow its flag (--name VALUE); "
                          "see --help")
    configs = tuple(parsed[: len(dataclass_types)])  # drop the trailing Namespace holding --config
    check_numbers(configs, config_source if values else "")
    if config is None:  # a command about to run (flags / --config): its devices must exist on this machine
        from recdata.devices import check_config_devices

        check_config_devices(configs, config_source if values else "")
    return configs


INT64_MAX = 2**63 - 1


def check_numbers(configs: Sequence[Any], source: str = "") -> None:
    """Every number a user set is one a run can use: an integer within int64 (torch, numpy, parquet and JSON
    readers all stop there) and a float that is finite (``nan`` / ``inf`` from a flag or ``.nan`` from YAML)."""
    where = f" ({source})" if source else ""
    for cfg in configs:
        if not dataclasses.is_dataclass(cfg):
            continue
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name, None)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, bool) or not isinstance(item, (int, float)) or item == f.default:
                    continue
                if isinstance(item, int) and abs(item) > INT64_MAX:
                    raise ConfigError(f"{f.name}={item} is too large (the limit is {INT64_MAX}){where}; give a "
                                      "realistic value")
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{f.name}={item} is not a finite number{where}; give a real value")


def _close_matches(names: Sequence[str], valid: Sequence[str]) -> str:
    """`` (did you mean x?)`` for the names that have a close match among ``valid``; empty otherwise."""
    import difflib

    hints = []
    for name in names:
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    return f" ({'; '.join(hints)})" if hints else ""


def reject_unknown_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``ConfigError`` naming every ``--flag`` in ``argv`` that the parser does not know, with close matches (or the
    valid flags when none is close), before argparse can answer with a missing required flag instead."""
    known = [opt for opt in parser._option_string_actions if opt.startswith("--")]
    unknown = []
    for token in argv:
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        flag = token.split("=", 1)[0]
        if flag in parser._option_string_actions:
            continue
        if parser.allow_abbrev and any(opt.startswith(flag) for opt in known):
            continue  # an abbreviation argparse resolves (or calls ambiguous itself)
        unknown.append(flag)
    if not unknown:
        return
    # HfArgumentParser adds a --dashed-alias of every --underscored_flag: name each flag once
    shown = sorted({opt for opt in known if "-" not in opt[2:] or f"--{opt[2:].replace('-', '_')}" not in known}
                   - {"--help"})
    hints = _close_matches(unknown, shown)
    valid = "" if hints else f"; valid flags: {' '.join(shown)}"
    raise ConfigError(f"unknown flag(s) {' '.join(unknown)}{hints}{valid} (see --help)")


_PERCENT = re.compile(r"%%|%\(|%")  # escaped, a format field, or a literal %


def build_parser(dataclass_types: Sequence[type]) -> argparse.ArgumentParser:
    """The ``HfArgumentParser`` of ``parse_config``: prog of the running command, ``--config`` listed, argparse
    errors raised as ``ConfigError``, booleans shown as ``{true,false}``."""
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    parser = HfArgumentParser(list(dataclass_types), prog=current_prog())
    parser.error = _raise_config_error  # type: ignore[method-assign]
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="Read any of these flags from a YAML file of key: value (flags given here win).")
    for action in parser._actions:
        if action.type is string_to_bool:
            action.metavar = "{true,false}"
        if action.help:  # argparse %-formats help ("%(default)s"): a literal % (e.g. "n % k") would break --help
            action.help = _PERCENT.sub(lambda m: "%%" if m.group() == "%" else m.group(), action.help)
    parser.epilog = "All flags may also be given in a YAML file with --config FILE.yaml (flags win)."
    return parser


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """A JSON-ready dict of resolved configs, keyed by dataclass name, for saving beside artefacts."""
    out: dict[str, Any] = {}
    for cfg in configs:
        if hasattr(cfg, "to_dict"):
            data = cfg.to_dict()
        else:
            data = dataclasses.asdict(cfg)
        out[type(cfg).__name__] = json.loads(json.dumps(data, default=_jsonable))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def require_fields(cfg: Any, *names: str) -> None:
    """``ConfigError`` naming the first of ``names`` that ``cfg`` leaves empty (flag and YAML key)."""
    for name in names:
        if not getattr(cfg, name):
            raise ConfigError(f"{name} is required (flag --{name} or the YAML key {name})")


def parse_ks(text: str, name: str = "ks") -> list[int]:
    """Sorted distinct positive cut-offs from ``"1,5,10"``; ``ConfigError`` naming ``name`` otherwise."""
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"{name} must be positive integers, got {text!r}")
    return ks
