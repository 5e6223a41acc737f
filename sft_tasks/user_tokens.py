"""User tokens (``tasks.user_tokens``): one learned vocabulary token per training user, put in front of every seqrec
prompt of that user, so the model can keep a user's long-run taste in one embedding row, beyond the last
``max_history`` items a prompt shows (TIGER's user-id token, one token per user instead of hashed buckets).

The tokens ride on the user-knowledge path: the build's ``user_knowledge.json`` maps each user to their token, the
trained model keeps a copy, and every consumer (evaluation, ranking validation, the cache, serving) prompts a
known user with it; a user the training never saw is prompted without one. The token is the user's identity,
not text about their items, so unlike knowledge text it is in every row of the user, ``seqrec_full`` included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from alignrec.llm.inert_text import USER_TOKEN_PATTERN

USER_TOKEN_RE = re.compile(USER_TOKEN_PATTERN)  # never a code token's shape (<a_12>: one letter)
USER_TOKENS_KEY = "user_tokens"  # tasks_manifest.json and a trained run's manifest: how many user tokens exist


def user_token(index: int) -> str:
    return f"<user_{index}>"


def is_user_token(text: str | None) -> bool:
    """True for exactly one user token: data text never is one (``InertText`` breaks the pattern in it)."""
    return bool(text) and USER_TOKEN_RE.fullmatch(text) is not None


def assign_user_tokens(users: Iterable[str], limit: int) -> dict[str, str]:
    """``{user: token}``: the users in sorted order take ``<user_0>``, ``<user_1>``, ...; past ``limit`` tokens they
    share them round-robin (``limit`` bounds the vocabulary on a large user base)."""
    if limit < 1:
        raise ValueError(f"user_tokens must be >= 1 to assign tokens, got {limit}")
    return {user: user_token(i % limit) for i, user in enumerate(sorted(set(users)))}


def user_token_count(assignment: dict[str, str]) -> int:
    return len(set(assignment.values()))


def add_user_tokens(hf_tokenizer: Any, count: int) -> list[int]:
    """Add ``<user_0>`` .. ``<user_{count-1}>`` as non-special tokens (idempotent); returns their ids.

    They must come before the item code tokens: the code tokens stay the tokenizer's last ones, which the tokens
    of items added later follow contiguously (``trainer.add_items``)."""
    from tokenizers import AddedToken

    from tokenization.item_tokenizer import code_token

    tokens = [user_token(i) for i in range(count)]
    vocab = hf_tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing and code_token(0, 0) in vocab:
        raise ValueError("user tokens must be added before the item code tokens; start from the base tokenizer")
    if missing:
        hf_tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False, lstrip=False,
                                            rstrip=False) for t in missing], special_tokens=False)
    vocab = hf_tokenizer.get_vocab()
    return [int(vocab[t]) for t in tokens]
