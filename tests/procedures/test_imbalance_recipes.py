"""Paper 15's recipes: pseudo-label weighting, pseudo-labels, pretext tasks, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit.procedures.imbalance_pretext import (
    noisy_views,
    pretrain_backbone,
    rotate_images,
    rotation_task,
)
from losskit.procedures.imbalance_recipes import (
    fit_classifier,
    pseudo_labels,
    semi_supervised_training,
    ssp_training,
)
from losskit.procedures.paired_batches import generators, paired_batches


def _data(n=30, n_pool=45, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y, torch.randn(n_pool, d, generator=g)


def _factory(d=6, c=3):
    return lambda: nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, c))


def _model(seed=0, d=6, c=3):
    torch.manual_seed(seed)
    return _factory(d, c)()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _shift(x, g):
    return x + 0.1 * torch.randn(x.shape, generator=g)


def test_paired_batches_partition_both_sets_and_labelled_part_ignores_pool():
    g1, p1 = generators(3)
    with_pool = paired_batches(23, 50, 5, g1, p1)
    g2, p2 = generators(3)
    alone = paired_batches(23, 0, 5, g2, p2)
    assert len(with_pool) == len(alone) == 5
    for (a, u), (b, e) in zip(with_pool, alone, strict=True):
        assert torch.equal(a, b) and e.numel() == 0 and u.numel() == 10
    assert sorted(torch.cat([a for a, _ in with_pool]).tolist()) == list(range(23))
    assert sorted(torch.cat([u for _, u in with_pool]).tolist()) == list(range(50))
    few = paired_batches(23, 3, 5, *generators(0))  # fewer pool rows than batches
    assert sorted(torch.cat([u for _, u in few]).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("augment", [None, _shift])
def test_pseudo_weight_zero_is_plain_supervised_training(augment):
    x, y, xu = _data()
    yu = torch.randint(0, 3, (len(xu),), generator=torch.Generator().manual_seed(1))
    a, b = _model(), _model()
    kw = dict(epochs=3, batch_size=8, seed=5, augment=augment)
    fit_classifier(a, x, y, x_pseudo=xu, y_pseudo=yu, pseudo_weight=0.0, **kw)
    fit_classifier(b, x, y, **kw)
    assert _same(a, b)
    c = _model()
    fit_classifier(c, x, y, x_pseudo=xu, y_pseudo=yu, pseudo_weight=0.5, **kw)
    assert not _same(a, c)


def test_weighted_loss_equals_the_paper_formula_on_one_step():
    x, y, xu = _data(n=8, n_pool=5)
    yu = torch.tensor([0, 2, 1, 1, 0])
    cw = torch.tensor([1.0, 3.0, 0.5])
    for omega in (1.0, 0.3):
        model = _model()
        with torch.no_grad():
            ll = F.cross_entropy(model(x), y, reduction="none")
            lu = F.cross_entropy(model(xu), yu, reduction="none")
        plain = (ll.sum() + omega * lu.sum()) / (len(x) + omega * len(xu))
        weighted = (ll @ cw[y] + omega * lu @ cw[yu]) / (cw[y].sum() + omega * cw[yu].sum())
        for class_weight, want in ((None, plain), (cw, weighted)):
            m = _model()
            got = fit_classifier(m, x, y, x_pseudo=xu, y_pseudo=yu, pseudo_weight=omega,
                                 class_weight=class_weight, epochs=1, batch_size=8)  # fmt: skip
            assert got[0] == pytest.approx(float(want), rel=1e-6)
    concat = _model()  # omega = 1 without class weights: CE on the concatenation
    with torch.no_grad():
        union = F.cross_entropy(concat(torch.cat([x, xu])), torch.cat([y, yu]))
    got = fit_classifier(concat, x, y, x_pseudo=xu, y_pseudo=yu, epochs=1, batch_size=8)
    assert got[0] == pytest.approx(float(union), rel=1e-6)


def test_pseudo_labels_are_the_base_models_argmax_and_base_is_plain_ce():
    x, y, xu = _data()
    res = semi_supervised_training(_factory(), x, y, xu, epochs=4, batch_size=8, seed=2)
    with torch.no_grad():
        want = [int(torch.argmax(res.base(row[None]))) for row in xu]
    assert res.pseudo_labels.tolist() == want
    assert res.pseudo_labels.dtype == torch.int64 and len(res.losses) == 4
    ce = _model(seed=2)
    fit_classifier(ce, x, y, epochs=4, batch_size=8, seed=2)
    assert _same(res.base, ce)
    again = semi_supervised_training(_factory(), x, y, xu, base=ce, epochs=4, batch_size=8, seed=2)
    assert torch.equal(again.pseudo_labels, res.pseudo_labels) and again.base_losses == []
    assert _same(again.model, res.model)
    zero = semi_supervised_training(_factory(), x, y, xu, unlabeled_weight=0.0, base=ce,
                                    epochs=4, batch_size=8, seed=2)  # fmt: skip
    assert _same(zero.model, ce)
    assert torch.equal(pseudo_labels(ce, xu), res.pseudo_labels)


def test_rotate_images_against_numpy_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 2 * 4 * 4, generator=g)
    turns = torch.tensor([0, 1, 2, 3, 4, 5, -1, 2, 1])
    got = rotate_images(x, turns, (2, 4, 4))
    for i in range(len(x)):
        want = np.rot90(x[i].reshape(2, 4, 4).numpy(), int(turns[i]), axes=(1, 2))
        np.testing.assert_array_equal(got[i].numpy(), want.reshape(-1))
    four = x
    for _ in range(4):
        four = rotate_images(four, torch.ones(9, dtype=torch.long), (2, 4, 4))
    assert torch.equal(four, x)


def test_rotation_task_is_balanced_and_consistent():
    x = torch.randn(10, 9)
    xr, turns = rotation_task(x, (3, 3), torch.Generator().manual_seed(4))
    counts = torch.bincount(turns, minlength=4)
    assert counts.max() - counts.min() <= 1 + 10 % 4 and counts.sum() == 10
    assert torch.equal(xr, rotate_images(x, turns, (3, 3)))


def test_noisy_views_and_pretraining():
    x = torch.randn(6, 4)
    v1, v2 = noisy_views(x, noise=0.0, drop=0.0, generator=torch.Generator())
    assert torch.equal(v1, x) and torch.equal(v2, x)
    v1, v2 = noisy_views(x, noise=0.5, drop=0.5, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(v1, v2)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(64, 16, generator=g)
    imgs[:, :4] += 2.0  # a bright top row: the rotation is visible
    for pretext, shape in (("rotation", (4, 4)), ("contrastive", None)):
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
        head = [p.clone() for p in model[-1].parameters()]
        losses = pretrain_backbone(model[:-1], imgs, pretext=pretext, image_shape=shape,
                                   epochs=15, batch_size=16, lr=1e-2)  # fmt: skip
        assert len(losses) == 15 and losses[-1] < losses[0]
        assert all(torch.equal(a, b) for a, b in zip(head, model[-1].parameters(), strict=True))


def test_ssp_training_starts_from_the_pretrained_backbone():
    x, y, _ = _data(n=32, d=16)
    res = ssp_training(_factory(16), x, y, image_shape=(4, 4), pretrain_epochs=3,
                       epochs=2, batch_size=8, seed=1)  # fmt: skip
    assert len(res.pretrain_losses) == 3 and len(res.losses) == 2
    model = _model(seed=1, d=16)
    pretrain_backbone(model[:-1], x, image_shape=(4, 4), epochs=3, batch_size=8, seed=1)
    fit_classifier(model, x, y, epochs=2, batch_size=8, seed=1)
    assert _same(model, res.model)


def test_bad_inputs_raise():
    x, y, xu = _data()
    m = _model()
    with pytest.raises(ValueError, match="finite"):
        fit_classifier(m, x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fit_classifier(m, x, y + 3)
    with pytest.raises(ValueError, match="shape"):
        fit_classifier(m, x, y[:-1])
    with pytest.raises(ValueError, match="together"):
        fit_classifier(m, x, y, x_pseudo=xu)
    with pytest.raises(ValueError, match="pseudo_weight"):
        fit_classifier(m, x, y, x_pseudo=xu, y_pseudo=y[:0].new_zeros(len(xu)), pseudo_weight=-1)
    with pytest.raises(ValueError, match="x_pseudo rows"):
        fit_classifier(m, x, y, x_pseudo=xu[:, :2], y_pseudo=y.new_zeros(len(xu)))
    with pytest.raises(ValueError, match="epochs"):
        fit_classifier(m, x, y, epochs=0)
    with pytest.raises(ValueError, match="class_weight"):
        fit_classifier(m, x, y, class_weight=torch.ones(2))
    with pytest.raises(ValueError, match="augment"):
        fit_classifier(m, x, y, augment=3)
    with pytest.raises(ValueError, match="integer"):
        fit_classifier(m, x, y.float())
    with pytest.raises(ValueError, match="model_factory"):
        semi_supervised_training(3, x, y, xu)
    with pytest.raises(ValueError, match="empty"):
        semi_supervised_training(_factory(), x, y, xu[:0])
    with pytest.raises(ValueError, match="Sequential"):
        ssp_training(lambda: nn.Linear(6, 3), x, y, pretext="contrastive")
    with pytest.raises(ValueError, match="pretext"):
        ssp_training(_factory(), x, y, pretext="jigsaw")
    with pytest.raises(ValueError, match="image_shape"):
        pretrain_backbone(m[:-1], x, image_shape=None)
    with pytest.raises(ValueError, match="square"):
        pretrain_backbone(m[:-1], x, image_shape=(2, 3))
    with pytest.raises(ValueError, match="do not hold"):
        pretrain_backbone(m[:-1], x, image_shape=(3, 3))
    with pytest.raises(ValueError, match="drop"):
        noisy_views(x, noise=0.1, drop=1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed"):
        fit_classifier(m, x, y, seed=-1)
