"""Tiny two-scenario splits: the plain one and one whose valid / test items are planted LEAK items."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_ITEMS, TINY_SEQUENCES
from tests.recommenders.conftest import SCEN, scenario_split  # noqa: F401 (fixture)


@pytest.fixture
def leak_scenario_split():
    """Every user's last two items (valid, test targets) are LEAK items found nowhere in a training part."""
    from recdata import RecDataset, leave_one_out_split

    items = list(TINY_ITEMS)
    sequences = []
    for seq in TINY_SEQUENCES:
        user = seq["user_id"]
        items += [{"item_id": f"v-{user}", "title": f"LEAKVALID {user}", "brand": "Leak", "categories": "Leak",
                   "description": "planted validation item"},
                  {"item_id": f"t-{user}", "title": f"LEAKTEST {user}", "brand": "Leak", "categories": "Leak",
                   "description": "planted test item"}]
        ids = [*seq["item_ids"], f"v-{user}", f"t-{user}"]
        sequences.append({"user_id": user, "item_ids": ids,
                          "scenarios": [SCEN.get(i, "lab" if i.startswith("v-") else "safety") for i in ids]})
    return leave_one_out_split(RecDataset.from_records(items, sequences, name="leak").validate(), max_history=20)


def scripted_generator(asked: list[str]):
    """make_generator: answers "knowledge about <prompt>" and records the prompts it was asked."""
    def make():
        def generate(prompts):
            asked.extend(prompts)
            return [f"knowledge about {p}" for p in prompts]
        return generate
    return make
