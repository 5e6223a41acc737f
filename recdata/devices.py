"""A torch device named by the user is checked once, at the boundary, against this machine.

``--device cuda`` on a machine without CUDA, ``--device npu`` (not a torch device type) or ``--device cuda:7`` on a
one-GPU machine would otherwise surface deep inside torch as an ``AssertionError`` / ``RuntimeError`` traceback,
possibly after minutes of work. ``check_device`` turns each into one ``ConfigError`` line naming the flag, the value,
the devices this machine has and the fix. It is a property of the machine, not of the config, so configs are
checked where a command is about to run (``parse_config`` for a subcommand's flags and YAML, ``alignrec run`` for
the sections of the stages it will run), never when a shipped config is merely validated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from recdata.errors import ConfigError

__all__ = ["DEVICE_FIELDS", "available_devices", "check_config_devices", "check_device", "check_section_devices"]

# Config fields that name a torch device (every stage's config uses one of these names).
DEVICE_FIELDS = ("device", "rq_device", "text_device", "sasrec_device", "learn_device")


def available_devices() -> list[str]:
    """The devices this machine can allocate on: ``cpu``, then ``cuda:0`` ... and ``mps`` when present."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _unusable(value: str) -> str | None:
    """Why ``value`` cannot be used on this machine, or None when it can."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        return "is not a torch device"
    if device.type == "cpu":
        return None
    if device.type == "meta":
        return "holds no data (the meta device only records shapes)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"cannot be used: {build}"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"does not exist: this machine has {count} CUDA device(s)"
        return None
    try:  # mps, xpu, hpu, ...: a one-element allocation is the only portable test
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - each backend fails its own way (AssertionError, RuntimeError, ...)
        return f"cannot be used here ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    return None


def check_device(value: str | None, flag: str = "--device", source: str = "", fix: str = "") -> str | None:
    """``value`` unchanged when empty (the command picks) or usable here; else ``ConfigError`` naming ``flag``,
    the devices this machine has and ``fix`` (default: pass ``flag cpu``)."""
    if value is None or str(value).strip() == "" or str(value) == "cpu":  # no torch import for the common case
        return value
    why = _unusable(str(value))
    if why is None:
        return value
    where = f"{source}: " if source else ""
    raise ConfigError(f"{where}{flag} {value!r} {why}; this machine has {', '.join(available_devices())}: "
                      f"{fix or f'pass one of them (e.g. {flag} cpu)'}")


def check_config_devices(configs: Iterable[Any], source: str = "") -> None:
    """``check_device`` for every ``DEVICE_FIELDS`` field of the dataclass ``configs`` (one command's configs)."""
    for cfg in configs:
        if not dataclasses.is_dataclass(cfg):
            continue
        names = {f.name for f in dataclasses.fields(cfg)}
        for name in DEVICE_FIELDS:
            if name in names:
                check_device(getattr(cfg, name), f"--{name}", source)


def check_section_devices(section: Mapping[str, Any], path: str, source: str) -> None:
    """``check_device`` for every ``DEVICE_FIELDS`` key of the run-config section at ``path`` (``tokenizer``),
    nested mappings included; the fix names the ``--set`` override."""
    for key, value in section.items():
        if isinstance(value, Mapping):
            check_section_devices(value, f"{path}.{key}", source)
        elif key in DEVICE_FIELDS and (value is None or isinstance(value, str)):
            check_device(value, f"{path}.{key}", source, fix=f"set it in the config or pass --set {path}.{key}=cpu")
