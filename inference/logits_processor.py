"""Trie constraint as a stateless HF ``LogitsProcessor``, for users who decode with ``model.generate``.

Stateless: each call re-walks the generated suffix of every row through the trie (``code_len`` vectorised
``searchsorted`` lookups), so it is correct under any beam reordering HF does. Fail closed: a row whose
suffix is off the trie, or that is complete, gets only ``-inf`` (or only EOS, when ``eos_token_id`` is given),
never an unconstrained distribution.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from inference.trie import ItemTrie


class TrieLogitsProcessor(LogitsProcessor):
    """Mask every token that does not extend a catalogue item's code sequence.

    ``prompt_length`` is the (padded) prompt width passed to ``generate``: tokens after it are the code.
    """

    def __init__(self, trie: ItemTrie, prompt_length: int, eos_token_id: int | None = None) -> None:
        if prompt_length < 0:
            raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
        self.trie = trie
        self.prompt_length = prompt_length
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(f"input_ids have {input_ids.shape[1]} tokens, fewer than prompt_length={self.prompt_length}")
        trie = self.trie.to(scores.device)
        generated = input_ids[:, self.prompt_length:]  # [rows, depth]
        depth = generated.shape[1]
        allowed = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)  # [rows, vocab]
        if depth < trie.code_len:
            nodes = trie.walk(generated.to(scores.device))  # [rows], -1 = off the trie (no children)
            owner, _, tokens = trie.children_csr(depth, nodes)  # [edges]: real children only, no padding
            allowed[owner, tokens] = True
        elif self.eos_token_id is not None:
            complete = trie.walk(generated[:, :trie.code_len].to(scores.device)) >= 0
            allowed[:, self.eos_token_id] = complete
        return scores.masked_fill(~allowed, float("-inf"))
