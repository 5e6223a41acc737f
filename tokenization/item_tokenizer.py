"""``ItemTokenizer``: the one-to-one map item_id <-> code tuple <-> code-token string, and its saved form.

Every later stage (SFT tasks, trainer, constrained decoding, vocab export) goes through this class, so it
owns the invariants: codes are one-to-one, all items have the same code length, and the code-token grid
(level-major, then code index) is fixed by ``codebook_sizes`` alone, never by which codes happen to be used,
so token ids stay stable when items are added.

Saved layout (``save_pretrained(dir)``)::

    config.json        format version, levels, codebook sizes, RQ-VAE config (or null), metadata
    item_codes.jsonl   {"item_id": ..., "codes": [...]} per item, in item order
    model.safetensors  RQ-VAE weights: codebooks ``codebooks.{l}``, alignment projection ``align_proj.*``, ...
    manifest.json      written last: content hash + sha256 of every file, verified by ``from_pretrained``

Over 400 lines because it owns every invariant of one saved artefact (one-to-one codes, the token grid, the
saved layout, catalogue checks); split, the invariants would be checked in several places.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdata.errors import InputFileError, UserError
from recdata.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file, sha256_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LEVEL_LETTERS = string.ascii_lowercase
CONFIG_FILE = "config.json"
CODES_FILE = "item_codes.jsonl"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")


def code_token(level: int, code: int) -> str:
    """``<a_12>``: level letter (a, b, c, ...) and code index."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def mapping_hash(item_ids: Sequence[str], codes: np.ndarray, codebook_sizes: Sequence[int]) -> str:
    """Hash of what downstream models depend on: the item -> codes table and the token grid.

    Weights are not part of it (the manifest hashes files separately), so a vocab export without weights
    can recompute and check it.
    """
    return sha256_json(
        {
            "format_version": FORMAT_VERSION,
            "codebook_sizes": [int(c) for c in codebook_sizes],
            "items": [[str(i), [int(c) for c in row]] for i, row in zip(item_ids, codes.tolist(), strict=True)],
        }
    )


class ItemTokenizer:
    """item_id <-> codes <-> code tokens. Build with ``from_codes`` or ``from_pretrained``.

    ``tensors`` (optional) holds the RQ-VAE state dict that produced the codes; it gives
    ``code_token_embeddings`` and cold-start ``assign_new_items``. ``model_config`` is the matching
    ``RQVAEConfig`` as a dict.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        codes: np.ndarray,
        codebook_sizes: Sequence[int],
        tensors: dict[str, torch.Tensor] | None = None,
        model_config: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self.codes: np.ndarray = np.ascontiguousarray(np.asarray(codes, dtype=np.int64))
        self.codebook_sizes: list[int] = [int(c) for c in codebook_sizes]
        self.tensors = dict(tensors or {})
        self.model_config = model_config
        self.meta = dict(meta or {})
        self._validate()
        self._row = {item: i for i, item in enumerate(self.item_ids)}
        self._by_code = {tuple(row): item for item, row in zip(self.item_ids, self.codes.tolist(), strict=True)}
        self.content_hash: str = mapping_hash(self.item_ids, self.codes, self.codebook_sizes)

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_codes(
        cls, item_ids: Sequence[str], codes: np.ndarray, codebook_sizes: Sequence[int], **kwargs: Any
    ) -> ItemTokenizer:
        """Build directly from a codes table; raises if two items share a code."""
        return cls(item_ids, codes, codebook_sizes, **kwargs)

    def _validate(self) -> None:
        n = len(self.item_ids)
        if self.codes.ndim != 2 or self.codes.shape[0] != n:
            raise UserError(f"codes must have shape (num_items={n}, num_levels), got {self.codes.shape}")
        levels = self.codes.shape[1]
        if len(self.codebook_sizes) != levels:
            raise UserError(f"codebook_sizes has {len(self.codebook_sizes)} entries but codes have {levels} levels")
        if not 1 <= levels <= len(LEVEL_LETTERS):
            raise UserError(f"num_levels must be in 1..{len(LEVEL_LETTERS)}, got {levels}")
        if any(c < 1 for c in self.codebook_sizes):
            raise UserError(f"codebook sizes must be >= 1, got {self.codebook_sizes}")
        if len(set(self.item_ids)) != n:
            dup = next(i for i, c in Counter(self.item_ids).items() if c > 1)
            raise UserError(f"item id {dup!r} appears more than once; item ids must be unique")
        for level, size in enumerate(self.codebook_sizes):
            bad = np.flatnonzero((self.codes[:, level] < 0) | (self.codes[:, level] >= size))
            if bad.size:
                i = int(bad[0])
                raise UserError(
                    f"item {self.item_ids[i]!r} has code {int(self.codes[i, level])} at level {level}, "
                    f"outside [0, {size}); fix the codes or the codebook size"
                )
        if n:
            _, first, counts = np.unique(self.codes, axis=0, return_index=True, return_counts=True)
            if (counts > 1).any():
                row = self.codes[first[np.argmax(counts)]]
                clash = [self.item_ids[i] for i in np.flatnonzero((self.codes == row).all(axis=1))[:5]]
                raise UserError(
                    f"codes are not one-to-one: items {clash} share code {tuple(int(c) for c in row)}; "
                    "run collision-free assignment (tokenization.collisions.assign_unique_codes) first"
                )

    # ---- basic properties -----------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return int(self.codes.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def check_catalogue(self, catalogue, where: str, split_dir: str, needed=None) -> None:
        """Provenance: refuse (``UserError``, one line) a split whose catalogue is not the one these codes were
        fitted on. ``needed`` (default: the whole ``catalogue``) must all have codes; coded items outside the
        catalogue are refused too, except the ones cold-start assignment added after fitting (counted in
        ``meta['cold_start_items']``: a recorded, known-compatible superset)."""
        catalogue = set(catalogue)
        uncoded = sorted(set(catalogue if needed is None else needed) - set(self._row))
        if uncoded:
            raise UserError(f"{len(uncoded)} catalogue item(s) of {split_dir} have no code in {where} (e.g. "
                            f"{uncoded[:3]}): it "
                            f"was fitted on another catalogue; re-run `alignrec tokenize --split_dir {split_dir}` "
                            "(and what follows) or pass the split it was fitted on")
        extra = [i for i in self.item_ids if i not in catalogue]
        if len(extra) > int(self.meta.get("cold_start_items", 0) or 0):
            fitted_on = self.meta.get("dataset")
            raise UserError(f"{where} was fitted on another catalogue{f' (dataset {fitted_on!r})' if fitted_on else ''}"
                            f": {len(extra)} of its items are not in {split_dir} (e.g. {extra[:3]}); pass the split "
                            f"it was fitted on, or re-run `alignrec tokenize --split_dir {split_dir}` (and what "
                            "follows)")

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def __repr__(self) -> str:
        return (
            f"ItemTokenizer(items={len(self)}, codebook_sizes={self.codebook_sizes}, "
            f"hash={self.content_hash[:12]})"
        )

    def code_tokens(self) -> list[str]:
        """The full grid ``<a_0> ... <a_{C0-1}> <b_0> ...``, level-major then code index."""
        return [code_token(level, c) for level, size in enumerate(self.codebook_sizes) for c in range(size)]

    def level_offsets(self) -> np.ndarray:
        """Position of each level's first token in ``code_tokens()``: ``[0, C0, C0+C1, ...]``."""
        return np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]).astype(np.int64)

    # ---- lookups --------------------------------------------------------------------------------------
    def _row_of(self, item_id: str) -> int:
        try:
            return self._row[item_id]
        except KeyError:
            raise KeyError(f"item {item_id!r} is not in this ItemTokenizer ({len(self)} items)") from None

    def item_to_codes(self, item_id: str) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[self._row_of(item_id)])

    def codes_to_item(self, codes: Sequence[int]) -> str | None:
        return self._by_code.get(tuple(int(c) for c in codes))

    def item_to_tokens(self, item_id: str) -> list[str]:
        return [code_token(level, c) for level, c in enumerate(self.item_to_codes(item_id))]

    def item_to_string(self, item_id: str) -> str:
        return "".join(self.item_to_tokens(item_id))

    def string_to_item(self, s: str) -> str | None:
        """Inverse of ``item_to_string``; whitespace between tokens is tolerated, anything else gives None."""
        text = "".join(s.split())
        tokens = _TOKEN_RE.findall(text)
        if len(tokens) != self.num_levels or "".join(f"<{a}_{b}>" for a, b in tokens) != text:
            return None
        if any(letter != LEVEL_LETTERS[level] for level, (letter, _) in enumerate(tokens)):
            return None
        return self.codes_to_item([int(b) for _, b in tokens])

    # ---- HF tokenizer ---------------------------------------------------------------------------------
    def add_to_tokenizer(self, hf_tokenizer: Any, grow: bool = False) -> list[int]:
        """Add the grid as non-special tokens; returns their ids (contiguous, grid order). Idempotent.

        ``grow``: the tokenizer holds this grid's first tokens (a trained model's, before ``assign_new_items``
        grew the item-id level); only the missing last ones are added, after them."""
        from tokenizers import AddedToken

        tokens = self.code_tokens()
        vocab = hf_tokenizer.get_vocab()
        present = [t for t in tokens if t in vocab]
        if len(present) == len(tokens):
            return self.code_token_ids(hf_tokenizer)
        if present and not (grow and present == tokens[:len(present)]):
            raise UserError(
                f"the tokenizer already holds {len(present)} of the {len(tokens)} code tokens (e.g. "
                f"{present[0]!r}) but not all; it was extended with a different grid. Start from the base "
                "tokenizer, or load the one saved with this ItemTokenizer"
            )
        if present and len(hf_tokenizer) != vocab[tokens[0]] + len(present):
            raise UserError("the tokenizer's code tokens are not its last tokens; new items' tokens cannot follow "
                            "them contiguously")
        hf_tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False, lstrip=False,
                                            rstrip=False) for t in tokens[len(present):]], special_tokens=False)
        ids = self.code_token_ids(hf_tokenizer)  # raises unless all are contiguous and in grid order
        logger.info("added %d code tokens to the tokenizer (%d there before): ids %d..%d", len(tokens) - len(present),
                    len(present), ids[0], ids[-1])
        return ids

    def code_token_ids(self, hf_tokenizer: Any) -> list[int]:
        """Ids of the grid in ``hf_tokenizer``; raises unless all are present, contiguous and in grid order."""
        tokens = self.code_tokens()
        vocab = hf_tokenizer.get_vocab()
        missing = [t for t in tokens if t not in vocab]
        if missing:
            raise UserError(
                f"tokenizer lacks {len(missing)} of {len(tokens)} code tokens (first {missing[0]!r}); call "
                "ItemTokenizer.add_to_tokenizer on it, or load the tokenizer saved with this ItemTokenizer"
            )
        ids = [int(vocab[t]) for t in tokens]
        expected = list(range(ids[0], ids[0] + len(ids)))
        if ids != expected:
            bad = next(i for i, (a, b) in enumerate(zip(ids, expected, strict=True)) if a != b)
            raise UserError(
                f"code tokens are not contiguous in the tokenizer: {tokens[bad]!r} has id {ids[bad]}, expected "
                f"{expected[bad]}; this tokenizer was extended with a different ItemTokenizer grid"
            )
        return ids

    def item_token_ids(self, hf_tokenizer: Any) -> np.ndarray:
        """``[N, L]`` token id of each item's code at each level."""
        base = self.code_token_ids(hf_tokenizer)[0]
        return self.codes + self.level_offsets()[None, :] + base  # [N, L]

    # ---- alignment embeddings -------------------------------------------------------------------------
    @property
    def num_quantized_levels(self) -> int:
        """RQ-VAE levels with a codebook; a trailing disambiguation level (if any) has none."""
        return sum(1 for k in self.tensors if re.fullmatch(r"codebooks\.\d+", k))

    def code_token_embeddings(self) -> torch.Tensor | None:
        """``[len(code_tokens()), llm_dim]`` initial input embeddings for the code tokens, or None.

        Code ``c`` of quantised level ``l`` maps to ``W @ e_{l,c} + b / Lq`` (``Lq`` quantised levels), so the
        sum of an item's code embeddings equals the alignment projection of its quantised vector,
        ``W @ z_q + b``, the vector the alignment loss pulled toward the LLM's mean token embedding of the
        item text. Disambiguation-level tokens carry no content and get zeros (the sum stays exact).
        None when the RQ-VAE was trained without the alignment loss (no projection saved).
        """
        if "align_proj.weight" not in self.tensors:
            return None
        weight = self.tensors["align_proj.weight"].float()  # [llm_dim, latent]
        bias = self.tensors.get("align_proj.bias")
        lq = self.num_quantized_levels
        rows = []
        for level, size in enumerate(self.codebook_sizes):
            if level < lq:
                book = self.tensors[f"codebooks.{level}"].float()  # [C, latent]
                if book.shape[0] != size:
                    raise UserError(f"codebook {level} has {book.shape[0]} codes but the grid says {size}")
                emb = book @ weight.T  # [C, llm_dim]
                if bias is not None:
                    emb = emb + bias.float() / lq
            else:
                emb = torch.zeros(size, weight.shape[0])
            rows.append(emb)
        return torch.cat(rows, dim=0)

    # ---- cold start -----------------------------------------------------------------------------------
    def rqvae(self):
        """Rebuild the RQ-VAE that produced the codes (needs ``tensors`` and ``model_config``)."""
        if not self.tensors or self.model_config is None:
            raise UserError("this ItemTokenizer has no RQ-VAE weights (built with from_codes); cannot encode items")
        from tokenization.rqvae import RQVAE, RQVAEConfig

        model = RQVAE(RQVAEConfig(**self.model_config))
        model.load_state_dict(self.tensors)
        return model.eval()

    def assign_new_items(
        self, item_ids: Sequence[str], embeddings: np.ndarray, beam: int | None = None
    ) -> ItemTokenizer:
        """A new ItemTokenizer with cold-start items appended, each given a free code without retraining.

        Existing items keep their codes and the grid is unchanged (token ids stay valid). ``beam`` defaults to
        the ``cold_start_beam`` the tokenizer was built with (64). See ``tokenization.collisions.assign_cold_start``.
        With an item-id level, new items keep their greedy RQ code and the id level grows by one token per new
        item (appended last, so existing token ids stay valid; a trained model needs those rows added).
        """
        from tokenization.collisions import assign_cold_start, assign_cold_start_with_ids

        new_ids = [str(i) for i in item_ids]
        clash = [i for i in new_ids if i in self._row]
        if clash:
            raise UserError(f"items {clash[:5]} already have codes; cold-start assignment is for new items only")
        if len(set(new_ids)) != len(new_ids):
            raise UserError("cold-start item ids must be unique")
        sizes = list(self.codebook_sizes)
        if self.meta.get("item_id_level"):
            grown = assign_cold_start_with_ids(self.rqvae(), self.codebook_sizes, embeddings, new_ids)
            new_codes, sizes = grown.codes, grown.codebook_sizes
        else:
            beam = beam or int(self.meta.get("cold_start_beam", 64))
            new_codes = assign_cold_start(self.rqvae(), self.codes, self.codebook_sizes, embeddings, new_ids, beam)
        return ItemTokenizer(
            [*self.item_ids, *new_ids],
            np.concatenate([self.codes, new_codes], axis=0),
            sizes,
            tensors=self.tensors,
            model_config=self.model_config,
            meta={**self.meta, "cold_start_items": int(self.meta.get("cold_start_items", 0)) + len(new_ids)},
        )

    # ---- persistence ----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config, codes table, weights, then the manifest (last, so a partial save never loads)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST_FILE).unlink(missing_ok=True)
        config = {
            "format_version": FORMAT_VERSION,
            "num_items": len(self),
            "num_levels": self.num_levels,
            "codebook_sizes": self.codebook_sizes,
            "token_format": "<{letter}_{code}>",
            "model_config": self.model_config,
            "meta": self.meta,
        }
        atomic_write_json(path / CONFIG_FILE, config)
        lines = (json.dumps({"item_id": i, "codes": row}, ensure_ascii=False) for i, row in zip(self.item_ids, self.codes.tolist(), strict=True))
        atomic_write_text(path / CODES_FILE, "".join(line + "\n" for line in lines))
        files = [CONFIG_FILE, CODES_FILE]
        if self.tensors:
            from safetensors.torch import save_file

            with atomic_path(path / WEIGHTS_FILE) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}, str(tmp))
            files.append(WEIGHTS_FILE)
        manifest = {
            "format_version": FORMAT_VERSION,
            "content_hash": self.content_hash,
            "num_items": len(self),
            "files": {name: sha256_file(path / name) for name in files},
        }
        if "rq_training" in self.meta:  # steps, epochs and step budget of the RQ-VAE (issue 34): one look tells
            manifest["rq_training"] = self.meta["rq_training"]
        atomic_write_json(path / MANIFEST_FILE, manifest)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ItemTokenizer:
        """Load a ``save_pretrained`` folder, verifying file hashes and the content hash."""
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise InputFileError(
                f"{manifest_path} not found: {path} is not a complete ItemTokenizer folder (the manifest is "
                "written last, so an interrupted save lacks it); re-run `alignrec tokenize`"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{manifest_path} is not valid JSON ({exc}): the tokenizer folder is damaged; re-run "
                            "`alignrec tokenize` (or copy the folder again)") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
                or "content_hash" not in manifest:
            raise UserError(f"{manifest_path} lacks 'files' / 'content_hash': the tokenizer folder is damaged; re-run "
                            "`alignrec tokenize` (or copy the folder again)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{manifest_path}: format_version {manifest.get('format_version')} != {FORMAT_VERSION}")
        for name, digest in manifest["files"].items():
            if not (path / name).is_file():
                raise InputFileError(f"{path / name} listed in {manifest_path} is missing")
            if sha256_file(path / name) != digest:
                raise UserError(f"{path / name} does not match its sha256 in {manifest_path}; the folder was modified")
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        item_ids, rows = _read_codes(path / CODES_FILE, int(config["num_levels"]))
        tensors = None
        if WEIGHTS_FILE in manifest["files"]:
            from safetensors.torch import load_file

            tensors = load_file(str(path / WEIGHTS_FILE))
        codes = np.asarray(rows, dtype=np.int64).reshape(len(rows), config["num_levels"])
        tok = cls(item_ids, codes, config["codebook_sizes"], tensors, config.get("model_config"), config.get("meta"))
        if tok.content_hash != manifest["content_hash"]:
            raise UserError(f"{path}: content hash {tok.content_hash} != manifest {manifest['content_hash']}")
        return tok


def _read_codes(path: Path, num_levels: int) -> tuple[list[str], list[list[int]]]:
    item_ids: list[str] = []
    rows: list[list[int]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                item_ids.append(str(rec["item_id"]))
                rows.append([int(c) for c in rec["codes"]])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{path}:{lineno}: expected {{'item_id': str, 'codes': [int, ...]}}: {exc}") from exc
            if len(rows[-1]) != num_levels:
                raise UserError(f"{path}:{lineno}: item {item_ids[-1]!r} has {len(rows[-1])} codes, expected {num_levels}")
    return item_ids, rows
