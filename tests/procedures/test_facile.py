"""FACILE (paper 40): set-level pre-training then few-shot transfer, on a synthetic task.

The task: ``C`` fine classes whose means differ only in a few directions of the input, with
large nuisance variance in every other direction. Sets of ``K = 5`` instances hold 3 instances
of one class and 2 of random classes, and carry only that majority class as their label (a
coarse, set-level label: it is wrong for up to 2 of the 5 instances and never seen per
instance). The transfer task has 2 labelled instances per class.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from losskit import catalog
from losskit.embedding.set_contrastive import pool_sets
from losskit.procedures.facile import FacileResult, facile, instance_transfer, set_pretrain

C, D, SIGNAL, K = 5, 40, 6, 5


def make_task(seed=0, sets=1200, shots=2, majority=3):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    means = 2.0 * torch.randn(C, SIGNAL, generator=g) @ basis[:, :SIGNAL].T

    def sample(y):
        z = torch.randn(len(y), D, generator=g)
        z[:, SIGNAL:] *= 3.0  # nuisance directions dominate the variance
        return means[y] + z @ basis.T

    set_y = torch.randint(0, C, (sets,), generator=g)
    inst_y = torch.randint(0, C, (sets, K), generator=g)
    inst_y[:, :majority] = set_y[:, None]
    x_sets = sample(inst_y.reshape(-1)).reshape(sets, K, D)
    few_y = torch.arange(C).repeat_interleave(shots)
    test_y = torch.randint(0, C, (2000,), generator=g)
    return x_sets, set_y, sample(few_y), few_y, sample(test_y), test_y


def encoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 16))


def accuracy(enc, head, x, y):
    enc.eval()
    with torch.no_grad():
        return float((head(enc(x)).argmax(1) == y).float().mean())


def test_set_pretraining_beats_training_on_the_few_instance_labels():
    x_sets, set_y, few_x, few_y, test_x, test_y = make_task()
    result = facile(
        encoder(), x_sets, set_y, few_x, few_y, pretrain_epochs=8,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert isinstance(result, FacileResult)
    acc = float((result.predict(test_x) == test_y).float().mean())
    assert result.pretrain_losses[-1] < result.pretrain_losses[0]
    # baselines on the same 10 labels: a head on the untrained encoder, and encoder + head
    # trained end to end from scratch
    frozen = encoder()
    head, _ = instance_transfer(frozen, few_x, few_y)
    scratch = encoder()
    head_s, _ = instance_transfer(scratch, few_x, few_y, finetune=True, steps=300)
    baseline = max(
        accuracy(frozen, head, test_x, test_y), accuracy(scratch, head_s, test_x, test_y)
    )
    assert acc > baseline + 0.25, (acc, baseline)
    # the gain comes from the set labels: shuffled set labels teach nothing
    g = torch.Generator().manual_seed(1)
    shuffled = facile(
        encoder(), x_sets, set_y[torch.randperm(len(set_y), generator=g)], few_x, few_y,
        pretrain_epochs=8, generator=g,
    )  # fmt: skip
    assert acc > float((shuffled.predict(test_x) == test_y).float().mean()) + 0.25


class AttentionPooling(nn.Module):
    """A learned set model: attention scores per instance, then attention pooling."""

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, inst):
        return pool_sets(inst, pooling="attention", attention_logits=self.score(inst)[..., 0])


def test_set_model_projector_and_views_are_trained():
    x_sets, set_y, *_ = make_task(sets=96)
    enc, set_model, proj = encoder(), AttentionPooling(16), nn.Linear(16, 8)
    before = [p.detach().clone() for m in (enc, set_model, proj) for p in m.parameters()]
    calls = []

    def augment(x):
        calls.append(x.shape)
        return x + 0.1 * torch.randn_like(x)

    losses = set_pretrain(
        enc, x_sets, set_y, set_model=set_model, projector=proj, epochs=2, batch_size=32,
        augment=augment, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = [p for m in (enc, set_model, proj) for p in m.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert len(calls) == 2 * 2 * 3 and calls[0] == (32, K, D)  # two views per batch


def test_frozen_transfer_is_logistic_regression_and_keeps_the_encoder():
    from sklearn.linear_model import LogisticRegression

    _, _, few_x, few_y, test_x, _ = make_task(shots=6)
    enc = encoder()
    before = [p.detach().clone() for p in enc.parameters()]
    head, _ = instance_transfer(enc, few_x, few_y, C=0.5, steps=500)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters(), strict=True))
    with torch.no_grad():
        feats, test_feats = enc(few_x).double().numpy(), enc(test_x).double()
        ours = torch.softmax(head.double()(test_feats), dim=1)
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(feats, few_y.numpy())
    theirs = torch.from_numpy(ref.predict_proba(test_feats.numpy()))
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)


def test_finetune_transfer_trains_the_encoder():
    _, _, few_x, few_y, *_ = make_task()
    enc = encoder()
    before = [p.detach().clone() for p in enc.parameters()]
    head, loss = instance_transfer(enc, few_x, few_y, finetune=True, steps=20, num_classes=7)
    assert head.out_features == 7 and loss == loss
    assert all(not torch.equal(a, b) for a, b in zip(before, enc.parameters(), strict=True))


def test_bad_inputs():
    x_sets, set_y, few_x, few_y, *_ = make_task(sets=8)
    enc = encoder()
    for args, kw, name in [
        ((x_sets[0], set_y), {}, "sets"),
        ((x_sets, set_y[:3]), {}, "set_labels"),
        ((x_sets, set_y.float()), {}, "set_labels"),
        ((x_sets, set_y), {"pooling": "attention"}, "pooling"),
        ((x_sets, set_y), {"temperature": 0.0}, "temperature"),
        ((x_sets, set_y), {"epochs": 0}, "epochs"),
        ((x_sets, set_y), {"batch_size": 1}, "batch_size"),
        ((x_sets, set_y), {"lr": -1.0}, "lr"),
    ]:
        with pytest.raises(ValueError, match=name):
            set_pretrain(enc, *args, **kw)
    for args, kw, name in [
        ((few_x[:0], few_y[:0]), {}, "instances"),
        ((few_x, few_y[:3]), {}, "labels"),
        ((few_x, few_y.float()), {}, "labels"),
        ((few_x, few_y - 1), {}, "labels"),
        ((few_x, few_y), {"num_classes": 2}, "num_classes"),
        ((few_x, few_y), {"C": 0.0}, "C"),
        ((few_x, few_y), {"steps": 0}, "steps"),
    ]:
        with pytest.raises(ValueError, match=name):
            instance_transfer(enc, *args, **kw)


def test_registry():
    (entry,) = [e for e in catalog(kind="procedure") if e.name == "facile"]
    assert entry.function is facile and entry.papers == (40,)
    assert entry.defaults["temperature"] == 0.07 and entry.defaults["finetune"] is False
