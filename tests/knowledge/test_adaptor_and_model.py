"""Hybrid-expert adaptor (gates sum to 1, shapes) and SASRec + knowledge (joint training, prestored vectors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignrec.recommenders import HybridExpertAdaptor, KnowledgeSASRec, SASRecConfig, train_sasrec

FAST = {"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_layers": 1, "sasrec_max_len": 8, "sasrec_epochs": 3,
        "sasrec_patience": 0, "sasrec_dropout": 0.0}


@pytest.mark.parametrize(("shared", "per_kind"), [(2, 2), (0, 3), (1, 0)])
def test_adaptor_gates_sum_to_one_and_shapes(shared, per_kind):
    torch.manual_seed(0)
    adaptor = HybridExpertAdaptor(in_dim=12, out_dim=5, shared=shared, per_kind=per_kind, hidden=8)
    x = torch.randn(7, 12)
    for kind in ("item", "user"):
        out, gates = adaptor(x, kind)
        assert out.shape == (7, 5) and gates.shape == (7, shared + per_kind)
        assert torch.allclose(gates.sum(-1), torch.ones(7)) and (gates >= 0).all()
    with pytest.raises(ValueError, match="unknown knowledge kind"):
        adaptor(x, "scenario")


def test_adaptor_output_is_the_gate_weighted_expert_mix():
    torch.manual_seed(0)
    adaptor = HybridExpertAdaptor(in_dim=4, out_dim=3, shared=1, per_kind=1, hidden=6, dropout=0.0).eval()
    x = torch.randn(2, 4)
    out, gates = adaptor(x, "user")
    z = adaptor.norm(x)
    reference = gates[:, :1] * adaptor.shared[0](z) + gates[:, 1:] * adaptor.own["user"][0](z)
    assert torch.allclose(out, reference, atol=1e-6)
    assert not torch.allclose(adaptor(x, "item")[0], out)  # kinds have their own gate and experts


def _model(split, dim=6, missing_user=None, holdout=1, missing_item=None):
    rng = np.random.default_rng(0)
    items = split.dataset.item_ids()
    known = [i for i in items if i != missing_item]
    train = {u: seq for u, seq in split.train_sequences() if u != missing_user}
    return KnowledgeSASRec(items, SASRecConfig(**FAST), (known, rng.normal(size=(len(known), dim))),
                           (list(train), rng.normal(size=(len(train), dim))),
                           user_history_items={u: len(seq) - holdout for u, seq in train.items()}, adaptor_hidden=8)


def _user_expert_grad(model, split) -> float:
    """Gradient norm reaching the user-only experts from one training loss over every window."""
    from alignrec.recommenders import training_windows

    x, y, users, labels = training_windows(split.train_sequences(), model.index, 8, with_users=True,
                                           labels=model.sequence_labels(split))
    model.zero_grad()
    model.training_loss(x, y, target_labels=labels, **model.context_for(users)).backward()
    return sum(float(p.grad.abs().sum()) for p in model.adaptor.own["user"].parameters() if p.grad is not None)


def test_user_vector_joins_only_the_targets_its_knowledge_did_not_read(tiny_split):
    model = _model(tiny_split)  # u1 trains on i1 i2 i3, its knowledge read i1 i2: only target i3 may use it
    labels = dict(zip([u for u, _ in tiny_split.train_sequences()], model.sequence_labels(tiny_split), strict=True))
    assert labels["u1"] == [0, 0, 1] and labels["u4"] == [0, 0, 0, 1] and labels["u2"] == [0, 1]
    assert _user_expert_grad(model, tiny_split) > 0
    # knowledge that read the whole training part may join no training target: no gradient reaches it
    assert _user_expert_grad(_model(tiny_split, holdout=0), tiny_split) == 0.0


def test_joint_training_moves_the_adaptor_and_prestored_scores_match(tmp_path, tiny_split):
    model = _model(tiny_split)
    before = {k: v.clone() for k, v in model.adaptor.state_dict().items()}
    train_sasrec(tiny_split, SASRecConfig(**FAST), model=model)
    assert any(not torch.equal(before[k], v) for k, v in model.adaptor.state_dict().items())  # trained jointly
    valid = tiny_split.eval_examples("valid")
    histories, users = list(valid["history"]), list(valid["user_id"])
    live = model.score(histories, **model.context_for(users))
    model.save_augmented(tmp_path / "aug")
    model.prestored = None
    model.use_augmented(tmp_path / "aug")
    for p in model.adaptor.parameters():  # serving never runs the adaptor
        p.data.fill_(float("nan"))
    assert torch.allclose(model.score(histories, **model.context_for(users)), live, atol=1e-5)
    assert (tmp_path / "aug" / "user_ids.txt").read_text().split() == model.user_ids


def test_user_knowledge_changes_scores_and_unknown_users_get_none(tiny_split):
    model = _model(tiny_split, missing_user="u1").eval()
    with torch.no_grad():
        for p in model.adaptor.parameters():
            p.add_(0.5)  # make the augmentation clearly non-zero
    histories = [["i1", "i2"], ["i1", "i2"]]
    with_user = model.score(histories, **model.context_for(["u2", "u1"]))
    plain = model.score(histories)  # no context: the user state is the hidden state alone
    assert not torch.allclose(with_user[0], plain[0])
    assert torch.allclose(with_user[1], plain[1])  # u1 has no knowledge: no augmentation
    assert int(model.user_has.sum()) == 4 and model.context_for(["u1"])["user_index"].tolist() == [0]


def test_loss_decreases(tiny_split):
    model = _model(tiny_split)
    cfg = SASRecConfig(**{**FAST, "sasrec_epochs": 30, "sasrec_lr": 5e-3})
    train_sasrec(tiny_split, cfg, model=model)
    from alignrec.recommenders import training_windows

    x, y, users = training_windows(tiny_split.train_sequences(), model.index, 8, with_users=True)
    torch.manual_seed(0)
    fresh = _model(tiny_split)
    with torch.no_grad():
        loss_after = float(model.eval().training_loss(x, y, **model.context_for(users)))
        assert loss_after < float(fresh.eval().training_loss(x, y, **fresh.context_for(users)))


def test_save_and_load_serves_prestored_vectors(tmp_path, tiny_split):
    model = _model(tiny_split)
    train_sasrec(tiny_split, SASRecConfig(**FAST), model=model)
    model.save_pretrained(tmp_path / "m")
    loaded = KnowledgeSASRec.from_pretrained(tmp_path / "m")
    assert loaded.prestored is not None and loaded.user_ids == model.user_ids
    users = ["u1", "u2", "nobody"]
    histories = [["i1"], ["i2", "i3"], ["i4"]]
    assert torch.allclose(loaded.score(histories, **loaded.context_for(users)),
                          model.score(histories, **model.context_for(users)), atol=1e-5)


def _scaled_up(model):
    """A clearly non-zero augmentation (the adaptor starts as a small perturbation), in eval mode."""
    with torch.no_grad():
        for p in model.adaptor.parameters():
            p.add_(0.3)
    return model.eval()


def test_item_inputs_run_the_adaptor_on_the_batch_items_only(tiny_split):
    model = _scaled_up(_model(tiny_split, dim=8, missing_item="i3"))  # i3: no knowledge, zero augmentation
    rows_seen = []
    model.adaptor.register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[0]))
    seqs = torch.tensor([[1, 2, 2, 3, 0, 0], [4, 1, 0, 0, 0, 0]])  # right-padded, repeats, the missing item
    with torch.no_grad():
        got = model.item_inputs(seqs)
        reference = (model.item_emb.weight + model.augmented("item"))[seqs] * math.sqrt(16)
    assert rows_seen[0] == 5  # the distinct rows 0..4, not the 8-item catalogue
    assert torch.allclose(got, reference, atol=1e-6)
    assert not torch.any(got[seqs == 0])  # padding: zero embedding, zero knowledge
    assert torch.equal(model.augmented("item", torch.tensor([3]))[0], torch.zeros(16))


def _brute_force_scores(model, histories, users):
    """One history at a time, no padding, every item's augmentation computed over the full table."""
    table = model.item_emb.weight + model.augmented("item")  # [items + 1, dim]
    user_vectors = model.augmented("user")
    rows = []
    for history, user in zip(histories, users, strict=True):
        idx = torch.tensor([model.index[i] for i in history][-model.cfg.sasrec_max_len:])
        x = (table[idx] * math.sqrt(model.cfg.sasrec_dim) + model.pos_emb(torch.arange(len(idx))))[None]
        for block in model.blocks:
            x = block(x)
        last = model.ln(x)[0, -1] + user_vectors[model.user_row.get(user, 0)]
        rows.append(last @ table[1:].T)
    return torch.stack(rows)


def test_score_matches_a_brute_force_reference(tiny_split):
    from alignrec.recommenders import SASRec

    model = _scaled_up(_model(tiny_split, dim=8, missing_item="i5"))
    histories = [["i1"], ["i2", "i3", "i5"], ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i1", "i2"], ["i4"]]
    users = ["u1", "u2", "nobody", "u3"]
    context = model.context_for(users)
    with torch.no_grad():
        reference = _brute_force_scores(model, histories, users)
    session = model.score(histories, batch_size=3, **context)  # the item table computed once
    live = SASRec.score(model, histories, batch_size=3, **context)  # no session: per-batch distinct items
    assert torch.allclose(session, reference, atol=1e-5) and torch.allclose(live, reference, atol=1e-5)
    assert model.session_items is None and model.prestored is None


def test_validation_computes_the_table_once_and_leaves_the_adaptor_live(tiny_split, monkeypatch):
    import alignrec.recommenders.base as base

    model = _model(tiny_split)
    item_passes, snapshots = [], []
    model.adaptor.register_forward_hook(lambda module, args, out: item_passes.append((args[1], args[0].shape[0])))
    validate = base.full_ranking_metrics

    def spy(*args, **kwargs):
        item_passes.clear()
        out = validate(*args, **kwargs)
        full = [rows for kind, rows in item_passes if kind == "item"]
        assert full == [len(model.item_ids) + 1]  # one adaptor pass over the catalogue per validation
        assert model.session_items is None and model.prestored is None
        snapshots.append({k: v.clone() for k, v in model.adaptor.state_dict().items()})
        return out

    monkeypatch.setattr(base, "full_ranking_metrics", spy)
    train_sasrec(tiny_split, SASRecConfig(**{**FAST, "sasrec_patience": 5}), model=model)
    assert len(snapshots) == 3
    for earlier, later in zip(snapshots, snapshots[1:], strict=False):  # adaptor kept learning after validation
        assert any(not torch.equal(earlier[k], later[k]) for k in earlier)
