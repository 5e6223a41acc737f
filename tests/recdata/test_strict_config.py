"""Config files and values a run cannot use are refused where they are read: a key given twice (PyYAML would keep
the last silently), a key that is not a name, an integer beyond int64, a float that is not finite, a config section
missing a required key (named as a key of that section, not as a flag)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from recdata.config import load_yaml, parse_config
from recdata.errors import ConfigError


@dataclass
class Tiny:
    path: str = field(metadata={"help": "required"})
    kcore: int = field(default=0, metadata={"help": "an int"})
    rate: float = field(default=0.5, metadata={"help": "a float"})
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.2], metadata={"help": "floats"})


def _yaml(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "line"), [("kcore: 5\nrate: 1.0\nkcore: 0\n", 3), ("x: {a: 1, a: 2}\n", 1)])
def test_a_key_given_twice_is_refused_with_its_lines(tmp_path, text, line):
    with pytest.raises(ConfigError, match=rf"c\.yaml:{line} is not valid YAML \(key '(kcore|a)' is given twice "
                                          r"\(first on line 1\); keep one\)"):
        load_yaml(_yaml(tmp_path, text))


def test_a_merge_key_may_be_overridden(tmp_path):
    data = load_yaml(_yaml(tmp_path, "base: &b {kcore: 1, rate: 0.1}\nother:\n  <<: *b\n  kcore: 2\n"))
    assert data["other"] == {"kcore": 2, "rate": 0.1}


def test_a_key_that_is_not_a_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: key 1 is not a field name"):
        load_yaml(_yaml(tmp_path, "kcore: 0\n1: 2\n"))


@pytest.mark.parametrize(("argv", "message"), [
    (["--kcore", str(2**63)], r"^kcore=9223372036854775808 is too large \(the limit is 9223372036854775807\)"),
    ([f"--kcore={-(2**63) - 5}"], r"kcore=-9223372036854775813 is too large"),
    (["--rate", "nan"], r"^rate=nan is not a finite number"),
    (["--rate=-inf"], r"^rate=-inf is not a finite number"),
    (["--ratios", "0.5", "inf"], r"^ratios=inf is not a finite number"),
])
def test_numbers_a_run_cannot_use(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([Tiny], ["--path", "p", *argv])


def test_the_limit_itself_and_ordinary_values_pass():
    (cfg,) = parse_config([Tiny], ["--path", "p", "--kcore", str(2**63 - 1), "--rate", "1e300"])
    assert cfg.kcore == 2**63 - 1 and cfg.rate == 1e300


def test_a_section_missing_a_required_key_names_the_key():
    with pytest.raises(ConfigError, match=r"^run\.yaml \[data\]: path is required; add `path: \.\.\.` there$"):
        parse_config([Tiny], [], config={"kcore": 1}, config_source="run.yaml [data]")
