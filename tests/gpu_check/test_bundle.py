"""The transfer bundle: chunks under the limit, exact reassembly, missing / corrupt chunks detected, wheel set."""

from __future__ import annotations

import json

import pytest

from alignrec.gpu_check.bundle import assemble, chunk_status, previous_chunks, wheels_to_bring, write_bundle


@pytest.fixture
def payload(tmp_path):
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    blob = bytes(range(256)) * 4000  # ~1 MB, so a 0.3 MiB limit gives several chunks
    (src / "model" / "weights.bin").write_bytes(blob)
    (src / "notes.txt").write_text("prepared split\n")
    return src, blob


def test_chunks_respect_the_limit_and_reassemble_exactly(tmp_path, payload):
    src, blob = payload
    carry = tmp_path / "carry"
    manifest = write_bundle([("model", src / "model"), ("notes.txt", src / "notes.txt")], carry, chunk_mib=0.3)
    sizes = [c["bytes"] for c in manifest["chunks"]]
    assert len(sizes) == 4 and max(sizes) <= 0.3 * 2**20
    assert json.loads((carry / "manifest.json").read_text())["chunks"] == manifest["chunks"]
    assert assemble(carry, tmp_path / "out")
    assert (tmp_path / "out" / "model" / "weights.bin").read_bytes() == blob
    assert (tmp_path / "out" / "notes.txt").read_text() == "prepared split\n"
    assert assemble(carry, tmp_path / "out")  # idempotent once complete


def test_missing_and_corrupt_chunks_block_assembly(tmp_path, payload):
    src, _ = payload
    carry = tmp_path / "carry"
    write_bundle([("model", src / "model")], carry, chunk_mib=0.3)
    (carry / "chunk_02" / "bundle.part").unlink()
    part3 = carry / "chunk_03" / "bundle.part"
    part3.write_bytes(b"x" + part3.read_bytes()[1:])
    status = chunk_status(carry)
    assert status["chunk_01"] == "ok" and status["chunk_02"] == "missing" and status["chunk_03"] == "corrupt"
    assert not assemble(carry, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wheels_bring_what_the_gpu_machine_lacks_and_never_torch():
    wheels = wheels_to_bring()
    assert {"trl", "datasets", "gguf", "deepspeed", "pyarrow"} <= set(wheels)
    assert not {"torch", "transformers", "peft", "accelerate", "numpy", "safetensors"} & set(wheels)
    assert "pyarrow" not in wheels_to_bring(skip=("pyarrow",))


def test_bundle_never_touches_files_it_did_not_write(tmp_path, payload):
    """Scratch tars get fresh names; only the chunk folders a previous bundle recorded are offered for removal."""
    src, _ = payload
    carry, out = tmp_path / "carry", tmp_path / "out"
    for folder in (carry, out):
        folder.mkdir()
        (folder / "bundle.tar").write_text("a user's file\n")
    (carry / "chunk_99").mkdir()  # not in any manifest of ours
    write_bundle([("model", src / "model")], carry, chunk_mib=0.3)
    assert assemble(carry, out)
    for folder in (carry, out):
        assert (folder / "bundle.tar").read_text() == "a user's file\n"
        assert not list(folder.glob(".bundle-*.tar"))  # the scratch tar is gone
    recorded = previous_chunks(carry)
    assert sorted(p.name for p in recorded) == ["chunk_01", "chunk_02", "chunk_03", "chunk_04"]
    assert previous_chunks(tmp_path / "nowhere") == []
