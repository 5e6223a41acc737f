"""Ship files to a machine that accepts at most ~64 MiB per transfer and has no network.

Everything the check needs (prepared data, wheels, the model file) goes into ONE uncompressed tar stream that
is cut into numbered chunks of at most ``chunk_mib`` MiB, one folder per chunk (``chunk_01/`` ...), so each
transfer carries one folder plus ``manifest.json``. On the far side ``assemble`` reports which chunks have
arrived (sha256-checked) and, once all have, joins and unpacks them. Chunks that arrived earlier stay where
they are, so transfers can be spread over several calls to a machine that stays up between them.

Wheels: the packages the far side lacks are the requirement closure (from this environment's metadata, with
environment markers evaluated) of what the check imports, minus the closure of what it already has. Exact
versions of this environment are downloaded for the far side's Python (``--python-version``); packages that
PyPI ships only as source (deepspeed) are built into a wheel here with ``pip wheel --no-build-isolation``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_json, sha256_file

__all__ = ["DEVICE_HAS", "DEVICE_NEEDS", "MANIFEST", "assemble", "chunk_status", "download_wheels",
           "requirement_closure", "wheels_to_bring", "write_bundle"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DEVICE_HAS = ("torch", "transformers", "peft", "accelerate")  # what the GPU machine comes with
DEVICE_NEEDS = ("trl", "datasets", "gguf", "deepspeed")  # what the check imports beyond that
_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(names: Iterable[str]) -> dict[str, str]:
    """``{distribution: installed version}`` for ``names`` and everything they require here (no extras)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = [_canon(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise UserError(f"{name} is not installed here, so its wheel cannot be pinned; install it first") from exc
        seen[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_canon(req.name))
    return seen


def wheels_to_bring(skip: Iterable[str] = ()) -> dict[str, str]:
    """What the far side lacks: closure(DEVICE_NEEDS) - closure(DEVICE_HAS) - ``skip`` (known to be there)."""
    have = set(requirement_closure(DEVICE_HAS)) | {_canon(s) for s in skip}
    return {n: v for n, v in sorted(requirement_closure(DEVICE_NEEDS).items()) if n not in have}


def download_wheels(packages: dict[str, str], dest: Path, python_version: str) -> list[Path]:
    """Exact-version wheels for ``python_version`` on x86-64 Linux; source-only packages are built here."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    for name, version in packages.items():
        spec = f"{name}=={version}"
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
               *[a for p in _PLATFORMS for a in ("--platform", p)], "-d", str(dest), spec]
        if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
            continue
        logger.info("%s has no wheel for Python %s; building one here", spec, python_version)
        built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), spec],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise UserError(f"cannot get a wheel for {spec}: {built.stderr.strip()[-400:]}")
    return sorted(dest.glob("*.whl"))


def write_bundle(files: list[tuple[str, Path]], out_dir: Path, chunk_mib: float, info: dict | None = None) -> dict:
    """Tar ``(name in bundle, path)`` pairs into ``out_dir/chunk_NN/bundle.part`` + ``out_dir/manifest.json``."""
    limit = int(chunk_mib * 2**20)
    if limit < 1:
        raise UserError(f"chunk_mib must be > 0, got {chunk_mib}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = _scratch_file(out_dir)  # a fresh name of our own: never a file that was already there
    chunks, whole = [], hashlib.sha256()
    try:
        with tarfile.open(tar_path, "w") as tar:
            for name, path in files:
                tar.add(path, arcname=name)
        with open(tar_path, "rb") as f:
            index = 0
            while block := f.read(limit):
                index += 1
                part = out_dir / f"chunk_{index:02d}" / "bundle.part"
                part.parent.mkdir(exist_ok=True)
                part.write_bytes(block)
                whole.update(block)
                chunks.append({"folder": part.parent.name, "bytes": len(block),
                               "sha256": hashlib.sha256(block).hexdigest()})
    finally:
        tar_path.unlink(missing_ok=True)
    manifest = {"format": 1, "chunks": chunks, "sha256": whole.hexdigest(), "members": [n for n, _ in files],
                **(info or {})}
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def _scratch_file(folder: Path) -> Path:
    """A new empty ``.bundle-*.tar`` in ``folder`` that this process created (and later removes)."""
    handle, name = tempfile.mkstemp(prefix=".bundle-", suffix=".tar", dir=folder)
    os.close(handle)
    return Path(name)


def previous_chunks(out_dir: Path) -> list[Path]:
    """The chunk folders an earlier ``write_bundle`` into ``out_dir`` recorded in its manifest (to replace)."""
    path = out_dir / MANIFEST
    try:
        chunks = json.loads(path.read_text())["chunks"] if path.is_file() else []
        names = [c["folder"] for c in chunks]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [out_dir / n for n in names if re.fullmatch(r"chunk_\d+", str(n)) and (out_dir / n).is_dir()]


def _manifest(carry_dir: Path) -> dict:
    path = carry_dir / MANIFEST
    if not path.is_file():
        raise InputFileError(f"{path} missing: carry it with every chunk (made by `gpu_check.sh prepare`)")
    return json.loads(path.read_text())


def chunk_status(carry_dir: Path) -> dict[str, str]:
    """``{chunk folder: "ok" | "missing" | "corrupt"}``."""
    out = {}
    for chunk in _manifest(carry_dir)["chunks"]:
        part = carry_dir / chunk["folder"] / "bundle.part"
        if not part.is_file():
            out[chunk["folder"]] = "missing"
        else:
            out[chunk["folder"]] = "ok" if sha256_file(part) == chunk["sha256"] else "corrupt"
    return out


def assemble(carry_dir: Path, dest: Path) -> bool:
    """Join and unpack the chunks into ``dest`` once all are present; False (nothing written) otherwise."""
    manifest = _manifest(carry_dir)
    done = dest / ".complete"
    if done.is_file() and done.read_text().strip() == manifest["sha256"]:
        return True
    status = chunk_status(carry_dir)
    if any(v != "ok" for v in status.values()):
        return False
    dest.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    tar_path = _scratch_file(dest)
    try:
        with open(tar_path, "wb") as out:
            for chunk in manifest["chunks"]:
                data = (carry_dir / chunk["folder"] / "bundle.part").read_bytes()
                whole.update(data)
                out.write(data)
        if whole.hexdigest() != manifest["sha256"]:
            raise UserError(f"joined chunks in {carry_dir} do not match the manifest; re-run prepare and re-send")
        with tarfile.open(tar_path) as tar:
            tar.extractall(dest, filter="data")
    finally:
        tar_path.unlink(missing_ok=True)
    done.write_text(manifest["sha256"] + "\n")
    return True
