"""Multi-scenario backbone (towers) and LLM4MSR meta layers: shapes, what changes outputs, training, persistence."""

from __future__ import annotations

import json

import pytest
import torch

from alignrec.recommenders import (
    LLM4MSRSASRec,
    MetaLayerGenerator,
    SASRec,
    SASRecConfig,
    ScenarioSASRec,
    ScenarioTowers,
    train_sasrec,
    training_windows,
)

FAST = {"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_layers": 1, "sasrec_max_len": 8, "sasrec_epochs": 6,
        "sasrec_patience": 0, "sasrec_dropout": 0.0, "sasrec_lr": 5e-3}


def _llm4msr(split, knowledge, history=None, **cfg):
    """``history``: ``{user: n}`` items each user's knowledge read; default 0 (the user layer at every target)."""
    history = {u: 0 for u in knowledge[1][0]} if history is None else history
    return LLM4MSRSASRec.for_split(split, SASRecConfig(**{**FAST, **cfg}), scenario_knowledge=knowledge[0],
                                   user_knowledge=knowledge[1], user_history_items=history, meta_rank=2,
                                   meta_hidden=8)


def test_training_windows_carry_each_targets_label():
    index = {f"i{k}": k for k in range(1, 8)}
    seqs = [("u1", ["i1", "i2", "i3", "i4", "i5", "i6"]), ("u2", ["i7", "i1"]), ("u3", ["i2"])]
    labels = [[10, 11, 12, 13, 14, 15], [20, 21], [30]]
    inputs, targets, users, target_labels = training_windows(seqs, index, max_len=3, with_users=True, labels=labels)
    # u1 is cut from its end: [i3 i4 i5 | i6] then [i1 i2 i3 | ...]; u3 has no transition
    assert inputs.tolist() == [[3, 4, 5], [1, 2, 0], [7, 0, 0]]
    assert targets.tolist() == [[4, 5, 6], [2, 3, 0], [1, 0, 0]]
    assert target_labels.tolist() == [[13, 14, 15], [11, 12, -1], [21, -1, -1]]  # the label of each target
    assert users == ["u1", "u1", "u2"]
    plain = training_windows(seqs, index, max_len=3)
    assert len(plain) == 2 and torch.equal(plain[0], inputs) and torch.equal(plain[1], targets)
    with pytest.raises(ValueError, match="labels has 1 sequences"):
        training_windows(seqs, index, max_len=3, labels=[[1]])


def test_plain_sasrec_has_no_labels(scenario_split):
    model = SASRec(scenario_split.dataset.item_ids(), SASRecConfig(**FAST))
    assert model.sequence_labels(scenario_split) is None
    valid = scenario_split.eval_examples("valid")
    assert model.eval_context(valid) == {}  # the target scenario never reaches plain SASRec


@pytest.mark.parametrize(("rows", "in_dim", "dim", "rank"), [(7, 12, 8, 2), (1, 3, 5, 1)])
def test_meta_layer_shapes_and_what_changes_them(rows, in_dim, dim, rank):
    torch.manual_seed(0)
    meta = MetaLayerGenerator(in_dim, dim, rank=rank, hidden=6)
    states, knowledge = torch.randn(rows, dim), torch.randn(rows, in_dim)
    down, up, bias = meta.weights(knowledge)
    assert down.shape == (rows, dim, rank) and up.shape == (rows, rank, dim) and bias.shape == (rows, dim)
    out = meta(states, knowledge)
    assert out.shape == (rows, dim)
    assert not torch.allclose(out, meta(states, torch.randn(rows, in_dim)))  # other knowledge -> another generated layer
    assert torch.equal(meta(states, knowledge, active=torch.zeros(rows)), states)  # no knowledge: identity
    reference = states + torch.einsum("nr,nrd->nd", torch.nn.functional.gelu(
        torch.einsum("nd,ndr->nr", states, down)), up) + bias
    assert torch.allclose(out, reference, atol=1e-6)
    with pytest.raises(ValueError, match="must share rows"):
        meta(states, knowledge[:0])


def test_towers_start_equal_then_follow_their_scenario():
    torch.manual_seed(0)
    towers = ScenarioTowers(dim=4, num_scenarios=2)
    x = torch.randn(3, 4)
    first, second = towers(x, torch.tensor([1, 1, 1])), towers(x, torch.tensor([2, 2, 2]))
    assert torch.allclose(first, second)  # W_s = 1, b_s = 0: every tower is the shared layer at first
    assert torch.allclose(first, x + x @ towers.shared_weight.T)
    with torch.no_grad():
        towers.bias[2] += 1.0
    mixed = towers(x, torch.tensor([1, 2, 0]))
    assert torch.allclose(mixed[0], first[0]) and torch.allclose(mixed[1], first[1] + 1.0)
    assert torch.allclose(mixed[2], first[2])  # 0 (unknown scenario): the shared part only


def test_llm4msr_scores_change_with_the_scenario_and_the_user(scenario_split, knowledge):
    torch.manual_seed(0)
    model = _llm4msr(scenario_split, knowledge).eval()
    items = len(scenario_split.dataset.item_ids())
    history = [["i1", "i2"]] * 2
    by_scenario = model.score(history, scenarios=["lab", "safety"], user_index=torch.tensor([1, 1]))
    assert by_scenario.shape == (2, items)
    assert not torch.allclose(by_scenario[0], by_scenario[1])  # same user + history, other scenario
    by_user = model.score(history, scenarios=["lab", "lab"], **model.context_for(["u1", "u2"]))
    assert not torch.allclose(by_user[0], by_user[1])  # same scenario + history, other user's knowledge
    unknown = model.score(history, scenarios=["lab", "lab"], **model.context_for(["nobody", "nobody-else"]))
    assert torch.allclose(unknown[0], unknown[1])  # no user knowledge: no user layer, the same state


def test_whole_catalogue_scores_each_item_through_its_own_scenario(scenario_split, knowledge):
    torch.manual_seed(0)
    model = _llm4msr(scenario_split, knowledge).eval()
    with torch.no_grad():
        model.towers.bias[1] += 0.5  # make the lab tower differ from the safety one
    history, context = [["i1", "i2"], ["i5"]], model.context_for(["u1", "u3"])
    whole = model.score(history, **context)
    lab, safety = (model.score(history, scenarios=[s, s], **context) for s in ("lab", "safety"))
    for col, item in enumerate(model.item_ids):
        expected = lab if model.item_scenario[item] == "lab" else safety
        assert torch.allclose(whole[:, col], expected[:, col])
    assert not torch.allclose(lab, safety)


def test_training_uses_each_targets_scenario(scenario_split, knowledge):
    torch.manual_seed(0)
    model = ScenarioSASRec.for_split(scenario_split, SASRecConfig(**FAST))
    with torch.no_grad():
        model.towers.bias[2] += 1.0
    inputs, targets, _, labels = training_windows(scenario_split.train_sequences(), model.index, 8, with_users=True,
                                                  labels=model.sequence_labels(scenario_split))
    rows = scenario_split.train_scenario_sequences()
    assert model.sequence_labels(scenario_split) == [[model.scenario_row[s] for s in r[2]] for r in rows]
    model.eval()
    loss = model.training_loss(inputs, targets, target_labels=labels)
    assert not torch.isclose(loss, model.training_loss(inputs, targets, target_labels=3 - labels.clamp(min=1)))
    assert not torch.isclose(loss, model.training_loss(inputs, targets))  # no labels: shared part only


@pytest.mark.parametrize("kind", ["backbone", "llm4msr"])
def test_training_lowers_the_loss_and_moves_every_part(tmp_path, scenario_split, knowledge, kind):
    torch.manual_seed(0)
    cfg = SASRecConfig(**FAST)
    model = ScenarioSASRec.for_split(scenario_split, cfg) if kind == "backbone" else _llm4msr(scenario_split, knowledge)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train_sasrec(scenario_split, cfg, log_file=tmp_path / "log.jsonl", model=model)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    moved = {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    parts = {"towers", "item_emb", "blocks"} | ({"scenario_meta", "user_meta"} if kind == "llm4msr" else set())
    assert parts <= moved
    assert torch.equal(model.towers.weight[0], before["towers.weight"][0])  # no target lacks a scenario


@pytest.mark.parametrize("kind", ["backbone", "llm4msr"])
def test_save_and_load_give_the_same_scores(tmp_path, scenario_split, knowledge, kind):
    torch.manual_seed(0)
    model = ScenarioSASRec.for_split(scenario_split, SASRecConfig(**FAST)) if kind == "backbone" \
        else _llm4msr(scenario_split, knowledge)
    model.eval()
    model.save_pretrained(tmp_path / "m")
    cls = type(model)
    back = cls.from_pretrained(tmp_path / "m")
    history, context = [["i1", "i2"], ["i5"]], model.context_for(["u1", "u3"])
    assert torch.allclose(back.score(history, **context), model.score(history, **context))
    assert torch.allclose(back.score(history, scenarios=["safety", "lab"], **context),
                          model.score(history, scenarios=["safety", "lab"], **context))
    other = LLM4MSRSASRec if kind == "backbone" else ScenarioSASRec
    with pytest.raises(ValueError, match="another class"):
        other.from_pretrained(tmp_path / "m")


# holdout 1 (`alignrec scenarios extract` default): each user's prompt read its training part minus the last item;
# u3 and u5 have one training item, so their prompts read nothing (no history_items: never in training)
HELD_OUT_1 = {"u1": 2, "u2": 1, "u4": 3}


def test_llm4msr_labels_flag_the_targets_after_what_the_knowledge_read(scenario_split, knowledge):
    model = _llm4msr(scenario_split, knowledge, history=HELD_OUT_1)
    # lab = 1, safety = 2, + label_stride (3) where the user meta layer may join
    # u1 i1 i2 i3 (read i1 i2) | u2 i2 i3 (read i2) | u3 i5 | u4 i8 i4 i1 i2 (read i8 i4 i1) | u5 i3
    assert model.label_stride == 3
    assert model.sequence_labels(scenario_split) == [[1, 2, 5], [2, 5], [1], [1, 1, 1, 5], [2]]
    backbone = ScenarioSASRec.for_split(scenario_split, SASRecConfig(**FAST))
    assert backbone.sequence_labels(scenario_split) == [[1, 2, 2], [2, 2], [1], [1, 1, 1, 2], [2]]


@pytest.mark.parametrize(("history", "expected_flagged"), [(HELD_OUT_1, 3), ({u: 0 for u in HELD_OUT_1}, 6)])
def test_user_meta_input_gets_gradient_only_from_targets_after_what_it_read(scenario_split, knowledge, history,
                                                                         expected_flagged):
    torch.manual_seed(0)
    model = _llm4msr(scenario_split, knowledge, history=history).eval()
    inputs, targets, users, labels = training_windows(scenario_split.train_sequences(), model.index, 8,
                                                      with_users=True, labels=model.sequence_labels(scenario_split))
    context = model.context_for(users)
    model.user_knowledge.requires_grad_(True)  # the user meta layer's input, [U + 1, Ku]
    mask = targets > 0
    where = mask.nonzero()  # [positions, 2]
    states = model.final_states(model.encode(inputs)[mask], rows=where[:, 0], cols=where[:, 1],
                                target_labels=labels, **context)  # [positions, dim]
    flagged = 0
    for p, (row, col) in enumerate(where.tolist()):
        (grad,) = torch.autograd.grad(states[p].sum(), model.user_knowledge, retain_graph=True)  # [U + 1, Ku]
        user = int(context["user_index"][row])
        others = torch.ones(len(grad), dtype=torch.bool)
        others[user] = False
        assert torch.count_nonzero(grad[others]) == 0  # a position never reaches another user's knowledge
        if int(labels[row, col]) >= model.label_stride:
            flagged += 1
            assert torch.count_nonzero(grad[user]) > 0, (users[row], col)
        else:  # a target the user's knowledge read: exactly no gradient through the user input
            assert torch.count_nonzero(grad[user]) == 0, (users[row], col)
    assert flagged == expected_flagged  # u1 i3, u2 i3, u4 i2 with holdout 1; every target of u1 u2 u4 with 0


def test_evaluation_and_serving_use_the_user_layer_whatever_the_holdout(tmp_path, scenario_split, knowledge):
    torch.manual_seed(0)
    model = _llm4msr(scenario_split, knowledge, history={}).eval()  # no user may use it in training
    history = [["i1", "i2"]] * 2
    scores = model.score(history, scenarios=["lab", "lab"], **model.context_for(["u1", "nobody"]))
    assert not torch.allclose(scores[0], scores[1])  # u1's knowledge still shapes its evaluation state
    model.save_pretrained(tmp_path / "m")
    back = LLM4MSRSASRec.from_pretrained(tmp_path / "m")
    assert back.user_history_items == {}
    assert torch.allclose(back.score(history, scenarios=["lab", "lab"], **back.context_for(["u1", "nobody"])), scores)
