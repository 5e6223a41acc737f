"""Config precedence (defaults < YAML < CLI), unknown-key errors, atomic writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from recdata.config import config_to_dict, parse_config
from recdata.io import atomic_path, atomic_write_json, sha256_json


@dataclass
class _Cfg:
    name: str = field(default="a", metadata={"help": "a name"})
    steps: int = field(default=10, metadata={"help": "steps"})
    use_thing: bool = field(default=False, metadata={"help": "a flag"})


def test_defaults_yaml_and_cli_precedence(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("name: from_yaml\nsteps: 5\n")
    (cfg,) = parse_config([_Cfg], [])
    assert (cfg.name, cfg.steps, cfg.use_thing) == ("a", 10, False)
    (cfg,) = parse_config([_Cfg], ["--config", str(yaml_file)])
    assert (cfg.name, cfg.steps) == ("from_yaml", 5)
    (cfg,) = parse_config([_Cfg], ["--config", str(yaml_file), "--steps", "7", "--use_thing", "true"])
    assert (cfg.name, cfg.steps, cfg.use_thing) == ("from_yaml", 7, True)


def test_unknown_yaml_key_names_file_and_key(tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("name: x\nstesp: 5\n")
    with pytest.raises(ValueError, match=r"stesp.*bad\.yaml"):
        parse_config([_Cfg], ["--config", str(yaml_file)])


def test_bool_flag_parses_false_as_false():
    (cfg,) = parse_config([_Cfg], ["--use_thing", "False"])
    assert cfg.use_thing is False


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_config([_Cfg], ["--config", str(tmp_path / "nope.yaml")])


def test_config_to_dict_is_json_ready():
    out = config_to_dict(_Cfg(name="z"))
    assert json.loads(json.dumps(out)) == {"_Cfg": {"name": "z", "steps": 10, "use_thing": False}}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "d"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


@dataclass
class _PercentCfg:
    share: int = field(default=5, metadata={"help": "user n keeps n % share items; 100% of them, 50%% escaped"})


def test_help_with_a_literal_percent_renders():
    from recdata.config import build_parser

    text = build_parser([_PercentCfg]).format_help()
    assert "user n keeps n % share items; 100% of them, 50% escaped" in " ".join(text.split())
    assert "(default: 5)" in text  # argparse's own %(default)s still formats
