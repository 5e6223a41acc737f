"""Devices named by a user are checked against this machine: one ConfigError line naming the flag, the value, what
the machine has and the fix; never when a config is merely parsed from a dict (a GPU config validates on a laptop)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from recdata.config import parse_config
from recdata.devices import check_config_devices, check_device, check_section_devices
from recdata.errors import ConfigError


@pytest.fixture
def one_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@dataclass
class Tiny:
    device: str = field(default="", metadata={"help": "torch device"})
    rq_device: str = field(default="cpu", metadata={"help": "torch device"})


@pytest.mark.parametrize("value", [None, "", "cpu", "cpu:1"])
def test_cpu_and_unset_always_pass(value, no_gpu):
    assert check_device(value, "--device") == value


def test_a_gpu_that_exists_passes(one_gpu):
    assert check_device("cuda", "--device") == "cuda"
    assert check_device("cuda:0", "--device") == "cuda:0"


def test_an_index_beyond_the_gpus_names_how_many_there_are(one_gpu):
    with pytest.raises(ConfigError, match=r"^--device 'cuda:7' does not exist: this machine has 1 CUDA device\(s\); "
                                          r"this machine has cpu, cuda:0: pass one of them \(e\.g\. --device cpu\)$"):
        check_device("cuda:7", "--device")


def test_cuda_without_a_gpu_says_why(monkeypatch, no_gpu):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match=r"'cuda' cannot be used: this torch is built without CUDA; this machine "
                                          r"has cpu"):
        check_device("cuda", "--rq_device")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(ConfigError, match=r"cannot be used: no CUDA GPU is visible"):
        check_device("cuda", "--rq_device")


@pytest.mark.parametrize("value", ["npu", "gpu", "CUDA", "cuda:x", "cuda:-1"])
def test_not_a_device_at_all(value, no_gpu):
    with pytest.raises(ConfigError, match=rf"--device '{value}' is not a torch device"):
        check_device(value, "--device")


def test_meta_is_refused(no_gpu):
    with pytest.raises(ConfigError, match="holds no data"):
        check_device("meta", "--device")


def test_every_device_field_of_a_config_is_checked(no_gpu):
    check_config_devices([Tiny()])
    with pytest.raises(ConfigError, match=r"^c\.yaml: --rq_device 'cuda'"):
        check_config_devices([Tiny(rq_device="cuda")], "c.yaml")


def test_run_sections_name_the_key_and_the_override(no_gpu):
    section = {"num_levels": 3, "llm4msr": {"device": "npu"}}
    with pytest.raises(ConfigError, match=r"run\.yaml: evaluate\.llm4msr\.device 'npu' is not a torch device; .*"
                                          r"--set evaluate\.llm4msr\.device=cpu"):
        check_section_devices(section, "evaluate", "run.yaml")
    check_section_devices({"device": "cpu", "rq_device": ""}, "tokenizer", "run.yaml")


def test_parse_config_checks_a_command_line_but_not_a_config_dict(no_gpu):
    with pytest.raises(ConfigError, match="--device 'cuda' cannot be used"):
        parse_config([Tiny], ["--device", "cuda"])
    (cfg,) = parse_config([Tiny], [], config={"device": "cuda"})  # a shipped GPU config validates on this machine
    assert cfg.device == "cuda"
