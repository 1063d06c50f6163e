import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.distillation.ferkd import FerKDLoss, ferkd_loss, ferkd_soft_labels, selfmix
from losskit.distillation.kd import kd_loss
from tests.distillation.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def softmax_row(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def slow_labels(t, y, thr, eps):
    out = []
    for row, yi in zip(t.tolist(), y.tolist(), strict=True):
        q = softmax_row(row)
        c = len(row)
        if q[yi] < thr:  # less-confident crop: softened hard ground truth
            q = [(1 - eps) * (k == yi) + eps / c for k in range(c)]
        out.append(q)
    return torch.tensor(out, dtype=torch.float64)


def slow_ferkd(s, t, y, thr, eps):
    labels = slow_labels(t, y, thr, eps)
    out = []
    for row, q in zip(s.tolist(), labels.tolist(), strict=True):
        logp = [math.log(v) for v in softmax_row(row)]
        out.append(-sum(a * b for a, b in zip(q, logp, strict=True)))
    return torch.tensor(out, dtype=torch.float64), labels


@pytest.mark.parametrize(("thr", "eps"), [(0.2, 0.1), (0.5, 0.3)])
def test_matches_slow_reference_value_and_gradient(thr, eps):
    s, t, y = random_pair(12, 5, scale=2.5)
    ref, labels = slow_ferkd(s, t, y, thr, eps)
    conf = torch.softmax(t, 1).gather(1, y[:, None]).squeeze(1)
    assert 0 < (conf < thr).sum() < 12  # both kinds of crops occur
    sg = s.clone().requires_grad_(True)
    out = ferkd_loss(sg, t, y, threshold=thr, smoothing=eps, reduction="none")
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    torch.testing.assert_close(sg.grad, torch.softmax(s, 1) - labels)  # soft-CE gradient
    torch.testing.assert_close(ferkd_soft_labels(t, y, threshold=thr, smoothing=eps), labels)


def test_labels_partition_into_teacher_and_smoothed_rows():
    s, t, y = random_pair(40, 6, scale=3.0, seed=2)
    q = torch.softmax(t, 1)
    labels = ferkd_soft_labels(t, y, threshold=0.25, smoothing=0.1)
    torch.testing.assert_close(labels.sum(1), torch.ones(40, dtype=torch.float64))
    low = q.gather(1, y[:, None]).squeeze(1) < 0.25
    smoothed = torch.full((40, 6), 0.1 / 6, dtype=torch.float64)
    smoothed[torch.arange(40), y] += 0.9
    torch.testing.assert_close(labels[low], smoothed[low])
    torch.testing.assert_close(labels[~low], q[~low])
    assert low.any() and (~low).any()


def test_limits_are_kd_and_label_smoothing():
    s, t, y = random_pair(10, 5, seed=3)
    q = torch.softmax(t, 1)
    entropy = -(q * q.log()).sum(1)
    keep_teacher = kd_loss(s, t, temperature=1.0, reduction="none") + entropy
    torch.testing.assert_close(ferkd_loss(s, t, y, threshold=0.0, reduction="none"), keep_teacher)
    torch.testing.assert_close(ferkd_loss(s, t, reduction="none"), keep_teacher)  # no target
    torch.testing.assert_close(
        ferkd_loss(s, t, y, threshold=1.5, smoothing=0.2, reduction="none"),
        F.cross_entropy(s, y, label_smoothing=0.2, reduction="none"),
    )


def test_one_hot_teacher_gives_cross_entropy():
    s, _, y = random_pair(8, 4, seed=4)
    onehot = F.one_hot(y, 4).double()
    torch.testing.assert_close(
        ferkd_loss(s, onehot, teacher_probs=True, reduction="none"),
        F.cross_entropy(s, y, reduction="none"),
    )


def test_teacher_probabilities_equal_teacher_logits():
    s, t, y = random_pair(10, 5, seed=5)
    p = torch.softmax(t, 1)
    torch.testing.assert_close(
        ferkd_loss(s, p, y, teacher_probs=True), ferkd_loss(s, t, y, threshold=0.2)
    )
    torch.testing.assert_close(ferkd_soft_labels(p, y, teacher_probs=True), ferkd_soft_labels(t, y))


def test_discarded_and_ignored_crops_leave_the_mean():
    s, t, y = random_pair(30, 5, scale=3.0, seed=6)
    conf = torch.softmax(t, 1).gather(1, y[:, None]).squeeze(1)
    none = ferkd_loss(s, t, y, discard_below=0.1, reduction="none")
    full = ferkd_loss(s, t, y, reduction="none")
    dropped = conf < 0.1
    assert dropped.any() and (~dropped).any()
    assert (none[dropped] == 0).all()
    torch.testing.assert_close(none[~dropped], full[~dropped])
    torch.testing.assert_close(ferkd_loss(s, t, y, discard_below=0.1), full[~dropped].mean())
    y2 = y.clone()
    y2[0] = -100
    out = ferkd_loss(s, t, y2, discard_below=0.1, reduction="none")
    assert out[0] == 0
    keep = ~dropped
    keep[0] = False
    torch.testing.assert_close(ferkd_loss(s, t, y2, discard_below=0.1), full[keep].mean())
    labels = ferkd_soft_labels(t, y2, threshold=1.5)
    torch.testing.assert_close(labels[0], torch.softmax(t[0], 0))  # ignored: teacher kept


def test_contract():
    s, t, y = random_pair()
    check_reductions(ferkd_loss, s, t, y, threshold=0.3)
    check_reductions(ferkd_loss, s, t, None)
    check_gradcheck(ferkd_loss, s, t, y, threshold=0.3)
    check_teacher_gets_no_grad(ferkd_loss, s, t, y)
    check_half_precision(ferkd_loss, y, threshold=0.3)
    check_half_precision(ferkd_loss, None)
    check_bad_inputs(ferkd_loss)
    check_bad_inputs(ferkd_loss, threshold=0.5)
    bad = [
        ({"threshold": -0.1}, "threshold"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"discard_below": 0.5, "threshold": 0.2}, "discard_below"),
        ({"threshold": float("nan")}, "threshold"),
    ]
    for kw, name in bad:
        with pytest.raises(ValueError, match=name):
            ferkd_loss(s, t, y, **kw)
        with pytest.raises(ValueError, match=name):
            FerKDLoss(**kw)
    for kw, name in bad[:2] + bad[3:]:
        with pytest.raises(ValueError, match=name):
            ferkd_soft_labels(t, y, **kw)
    with pytest.raises(ValueError, match="target"):
        ferkd_loss(s, t, None, discard_below=0.1)
    for args, kw, name in (
        ((t, y[:3]), {}, "target"),
        ((t[0], y), {}, "teacher"),
        ((torch.softmax(t, 1) * 2, y), {"teacher_probs": True}, "teacher"),
        ((t, y.double()), {}, "target"),
    ):
        with pytest.raises(ValueError, match=name):
            ferkd_soft_labels(*args, **kw)
    module = FerKDLoss(threshold=0.3, smoothing=0.2, discard_below=0.05)
    torch.testing.assert_close(
        module(s, t, y), ferkd_loss(s, t, y, threshold=0.3, smoothing=0.2, discard_below=0.05)
    )
    entry = get("ferkd")
    assert entry.papers == (27,) and entry.defaults["smoothing"] == 0.1
    torch.testing.assert_close(entry.build()(s, t, y), ferkd_loss(s, t, y))


def crops(n_images=3, per_image=4, c=5, seed=0):
    """Crop i is a constant image of value i; soft labels per crop; image id per crop."""
    n = n_images * per_image
    x = torch.arange(n, dtype=torch.float64)[:, None, None, None].expand(n, 1, 8, 8).clone()
    g = torch.Generator().manual_seed(seed)
    labels = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), 1)
    group = torch.arange(n_images).repeat_interleave(per_image)
    return x, labels, group[torch.randperm(n, generator=g)]


def test_selfmix_pairs_crops_of_the_same_image():
    x, q, group = crops()
    gen = torch.Generator().manual_seed(3)
    mixed, labels = selfmix(x, q, group=group, lam=0.0, mode="mixup", generator=gen)
    partner = mixed[:, 0, 0, 0].long()
    assert (group[partner] == group).all()
    assert (partner != torch.arange(12)).all()
    assert sorted(partner.tolist()) == list(range(12))  # every crop is used once
    torch.testing.assert_close(labels, q[partner])
    gen = torch.Generator().manual_seed(3)
    mixed, labels = selfmix(x, q, group=group, lam=0.3, mode="mixup", generator=gen)
    torch.testing.assert_close(mixed, 0.3 * x + 0.7 * x[partner])
    torch.testing.assert_close(labels, 0.3 * q + 0.7 * q[partner])
    torch.testing.assert_close(labels.sum(1), torch.ones(12, dtype=torch.float64))


def test_selfmix_cutmix_label_share_is_the_pixel_share():
    x, q, group = crops(seed=1)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        mixed, labels = selfmix(x, q, group=group, generator=gen)
        vals, own_vals = mixed.reshape(12, -1), x.reshape(12, -1)
        own = (vals == own_vals).double().mean(dim=1)
        pasted = torch.where(vals != own_vals, vals, torch.full_like(vals, -1)).amax(dim=1)
        mixed_rows = own < 1
        assert mixed_rows.any()
        partner = torch.where(mixed_rows, pasted, torch.arange(12.0, dtype=vals.dtype)).long()
        expected = own[:, None] * q + (1 - own[:, None]) * q[partner]
        torch.testing.assert_close(labels[mixed_rows], expected[mixed_rows])
        assert (group[partner] == group).all()


def test_selfmix_keeps_a_shared_image_label_and_is_deterministic():
    x, _, group = crops(seed=2)
    g = torch.Generator().manual_seed(1)
    per_image = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), 1)
    q = per_image[group]
    for mode in ("cutmix", "mixup"):
        _, labels = selfmix(
            x, q, group=group, mode=mode, generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(labels, q)
    runs = [selfmix(x, q, group=group, alpha=0.4, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]  # fmt: skip
    torch.testing.assert_close(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1])
    mixed, labels = selfmix(x, q, lam=1.0)  # nothing pasted
    torch.testing.assert_close(mixed, x)


def test_selfmix_bad_inputs():
    x, q, group = crops()
    cases = [
        ((x, q), {"mode": "blend"}, "mode"),
        ((x, q), {"alpha": 0.0}, "alpha"),
        ((x, q), {"lam": 1.5}, "lam"),
        ((x, q), {"group": group[:5]}, "group"),
        ((x, q), {"group": group.double()}, "group"),
        ((x[:5], q), {}, "inputs"),
        ((x[:, 0, 0, 0], q), {}, "inputs"),
        ((x.long(), q), {}, "inputs"),
        ((x, q * 2), {}, "soft_labels"),
        ((x, q[:, :1]), {}, "soft_labels"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            selfmix(*args, **kw)
