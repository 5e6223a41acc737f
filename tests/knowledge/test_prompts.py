"""REKI prompts are exact for a tiny item / user (golden strings); factor parsing."""

from __future__ import annotations

import pytest

from alignrec.knowledge import prompts as P

ITEM = {"title": "Pipette tips", "brand": "LabCo", "categories": "Lab > Pipettes", "description": "Sterile tips"}
BARE = {"title": "Lab coat", "brand": "", "categories": "", "description": ""}
FACTORS = ["use case", "material"]


def test_item_prompt_golden():
    assert P.item_prompt(ITEM, FACTORS) == (
        "Introduce this product and describe its attributes along these factors: use case, material.\n"
        'Product: "Pipette tips" (brand: LabCo; category: Pipettes)')
    assert P.item_prompt(BARE, FACTORS).endswith('Product: "Lab coat"')  # empty details are left out


def test_user_prompt_golden():
    assert P.user_prompt([ITEM, BARE], FACTORS) == (
        'A customer bought these products, oldest first: "Pipette tips"; "Lab coat".\n'
        "Analyse the customer's preferences along these factors: use case, material.")


def test_group_and_factor_prompts_golden():
    assert P.item_group_prompt([ITEM, BARE], FACTORS) == (
        'These products are similar: "Pipette tips" (brand: LabCo; category: Pipettes); "Lab coat".\n'
        "Describe what they have in common along these factors: use case, material.")
    assert P.user_group_prompt([BARE], FACTORS) == (
        'A group of customers with similar tastes often bought these products: "Lab coat".\n'
        "Analyse the group's preferences along these factors: use case, material.")
    assert P.factor_prompt("lab supplies", 3) == (
        "List the 3 most important factors that shape a customer's preferences when buying lab supplies. "
        "Answer with a comma-separated list of short factor names only.")


def test_long_titles_are_cut():
    item = {"title": " ".join(f"w{i}" for i in range(30))}
    assert P.item_line(item, max_title_words=3, with_details=False) == '"w0 w1 w2 ..."'


@pytest.mark.parametrize(("answer", "count", "expected"), [
    ("Price, Quality, Brand", 4, ["price", "quality", "brand"]),
    ("1. Use case\n2. Material\n3) Safety standard\n- Brand.", 3, ["use case", "material", "safety standard"]),
    ("price, Price, a very long factor name with many words, 42", 4, ["price"]),
    ("", 4, []),
])
def test_parse_factors(answer, count, expected):
    assert P.parse_factors(answer, count) == expected
