"""LLM4MSR prompts: exact strings on the tiny two-scenario dataset; only training items ever reach a prompt, and a
user prompt leaves out its user's last ``user_holdout_items`` training items (the targets its meta layer trains on)."""

from __future__ import annotations

import pytest

from alignrec.llm4msr import ScenarioExtractConfig, build_scenario_prompts, build_user_prompts

# tiny training parts (leave-one-out): u1 i1 i2 i3 | u2 i2 i3 | u3 i5 | u4 i8 i4 i1 i2 | u5 i3
# lab = i1 i4 i5 i8, safety = i2 i3 i6 i7; holdout 1 reads u1 i1 i2 | u2 i2 | u4 i8 i4 i1 (u3, u5: nothing left)
LAB_PROMPT = (
    'An online shop has 2 scenarios: lab (e.g. "Pipette tips", "Digital scale"); safety (e.g. "Nitrile gloves", '
    '"Safety glasses").\nDescribe the scenario "lab": what its customers look for, and how it relates to the other '
    "scenarios (shared interests and differences)."
)
U1_PROMPT = (
    "A customer's purchases, oldest first, each with its scenario: \"Pipette tips\" [lab]; \"Nitrile gloves\" "
    "[safety]; \"Safety glasses\" [safety].\nSummarise the customer's interests in each scenario (lab, safety) and "
    "what connects them across scenarios."
)
U1_PROMPT_HOLDOUT_1 = (
    "A customer's purchases, oldest first, each with its scenario: \"Pipette tips\" [lab]; \"Nitrile gloves\" "
    "[safety].\nSummarise the customer's interests in each scenario (lab, safety) and what connects them across "
    "scenarios."
)
U4_PROMPT_LAST_2 = U1_PROMPT_HOLDOUT_1  # holdout 0: u4's last two training items are i1 i2 too
U4_PROMPT_LAST_2_HOLDOUT_1 = (
    "A customer's purchases, oldest first, each with its scenario: \"Digital scale\" [lab]; \"Pipette tips\" "
    "[lab].\nSummarise the customer's interests in each scenario (lab, safety) and what connects them across "
    "scenarios."
)
GROUP_PROMPT = (
    "A group of customers with similar tastes often bought these products, each with its scenario: \"Nitrile "
    "gloves\" [safety]; \"Safety glasses\" [safety]; \"Pipette tips\" [lab].\nSummarise the group's interests in "
    "each scenario (lab, safety) and what connects them across scenarios."
)
GROUP_PROMPT_HOLDOUT_1 = (  # u1 i1 i2 | u2 i2 | u4 i8 i4 i1: i1, i2 twice; then i4 (catalogue order before i8)
    "A group of customers with similar tastes often bought these products, each with its scenario: \"Pipette "
    "tips\" [lab]; \"Nitrile gloves\" [safety]; \"Digital scale\" [lab].\nSummarise the group's interests in "
    "each scenario (lab, safety) and what connects them across scenarios."
)


def test_scenario_prompts_are_exact(scenario_split):
    prompts = build_scenario_prompts(ScenarioExtractConfig(scenario_examples=2), scenario_split)
    assert list(prompts) == ["lab", "safety"]
    assert prompts["lab"] == LAB_PROMPT
    assert prompts["safety"] == LAB_PROMPT.replace('scenario "lab"', 'scenario "safety"')


def test_user_prompts_are_exact(scenario_split):
    prompts, assignment, info = build_user_prompts(ScenarioExtractConfig(user_sample=5, user_holdout_items=0),
                                                   scenario_split)
    assert assignment == {u: u for u in ("u1", "u2", "u3", "u4", "u5")}
    assert prompts["u1"] == U1_PROMPT
    assert info == {"users": 5, "individual": 5, "clusters": 0, "clustered_users": 0, "without_knowledge": 0}
    last_two, _, _ = build_user_prompts(ScenarioExtractConfig(user_sample=5, user_history_items=2,
                                                              user_holdout_items=0), scenario_split)
    assert last_two["u4"] == U4_PROMPT_LAST_2  # the most recent training items


def test_user_prompts_leave_out_the_held_out_items(scenario_split):
    prompts, assignment, info = build_user_prompts(ScenarioExtractConfig(user_sample=5), scenario_split)  # default 1
    assert assignment == {u: u for u in ("u1", "u2", "u4")}  # u3, u5: their one training item is held out
    assert prompts["u1"] == U1_PROMPT_HOLDOUT_1 and "Safety glasses" not in prompts["u1"]  # u1's last: i3
    assert info == {"users": 3, "individual": 3, "clusters": 0, "clustered_users": 0, "without_knowledge": 0}
    last_two, _, _ = build_user_prompts(ScenarioExtractConfig(user_sample=5, user_history_items=2), scenario_split)
    assert last_two["u4"] == U4_PROMPT_LAST_2_HOLDOUT_1  # i4 i1: the two before the held-out i2


def test_group_prompt_is_exact_and_covers_the_users_outside_the_sample(scenario_split):
    prompts, assignment, info = build_user_prompts(ScenarioExtractConfig(user_sample=0, user_clusters=1,
                                                                         group_examples=3, user_holdout_items=0),
                                                   scenario_split)
    assert prompts == {"user-cluster-0": GROUP_PROMPT}
    assert assignment == {u: "user-cluster-0" for u in ("u1", "u2", "u3", "u4", "u5")}
    assert info["clusters"] == 1 and info["clustered_users"] == 5
    held, assignment, _ = build_user_prompts(ScenarioExtractConfig(user_sample=0, user_clusters=1, group_examples=3),
                                             scenario_split)
    assert held == {"user-cluster-0": GROUP_PROMPT_HOLDOUT_1}  # no member's held-out item counts
    assert assignment == {u: "user-cluster-0" for u in ("u1", "u2", "u4")}
    hybrid, assignment, info = build_user_prompts(ScenarioExtractConfig(user_sample=2, user_clusters=2,
                                                                        user_holdout_items=0), scenario_split)
    individual = [u for u, name in assignment.items() if name == u]
    assert len(individual) == 2 and len(assignment) == 5 and info["individual"] == 2
    assert {name for u, name in assignment.items() if u not in individual} <= {n for n in hybrid if "cluster" in n}
    assert len(hybrid) == 2 + info["clusters"]


@pytest.mark.parametrize(("sample", "clusters"), [(5, 0), (0, 2), (2, 2)])
def test_no_validation_or_test_item_reaches_a_prompt(leak_scenario_split, sample, clusters):
    cfg = ScenarioExtractConfig(user_sample=sample, user_clusters=clusters, scenario_examples=100, group_examples=100,
                                user_history_items=100)
    scenario = build_scenario_prompts(cfg, leak_scenario_split)
    users, assignment, _ = build_user_prompts(cfg, leak_scenario_split)
    assert len(assignment) == 5
    for prompt in [*scenario.values(), *users.values()]:
        assert "LEAK" not in prompt
    assert "Pipette tips" in scenario["lab"]  # the prompts do show the training items
