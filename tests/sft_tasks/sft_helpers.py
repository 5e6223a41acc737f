"""Shared helpers of the sft_tasks tests (a module, not conftest, so test files can import it by name)."""

from __future__ import annotations

import numpy as np

# i1..i8 -> 3-level codes; i1/i2 share (0, 0), i4/i5 share (1, 0): hard negatives have a known answer.
TINY_CODES = {
    "i1": (0, 0, 0), "i2": (0, 0, 1), "i3": (0, 1, 0), "i4": (1, 0, 0),
    "i5": (1, 0, 1), "i6": (1, 1, 0), "i7": (2, 0, 0), "i8": (2, 1, 0),
}


def code_string(codes: tuple[int, ...]) -> str:
    return "".join(f"<{'abc'[level]}_{c}>" for level, c in enumerate(codes))


def synthetic_split(num_users: int = 40, num_items: int = 120, seed: int = 0, max_history: int = 5):
    """Random users with distinct items each (length 3..12), leave-one-out; codes 3 levels of 4 x 4 x 8."""
    from recdata import RecDataset, leave_one_out_split
    from tokenization import ItemTokenizer

    rng = np.random.default_rng(seed)
    items = [{"item_id": f"it{k}", "title": f"Item {k}", "brand": f"B{k % 5}",
              "categories": f"Cat{k % 3} > Sub{k % 7}", "description": f"word{k % 11} thing{k % 13}"}
             for k in range(num_items)]
    sequences = [{"user_id": f"u{u}", "item_ids": [f"it{k}" for k in rng.choice(num_items, int(rng.integers(3, 13)), replace=False)]}
                 for u in range(num_users)]
    split = leave_one_out_split(RecDataset.from_records(items, sequences, name="synthetic").validate(), max_history)
    grid = np.array([(a, b, c) for a in range(4) for b in range(4) for c in range(8)])[:num_items]
    item_tokenizer = ItemTokenizer.from_codes([f"it{k}" for k in range(num_items)], grid, [4, 4, 8])
    return split, item_tokenizer

