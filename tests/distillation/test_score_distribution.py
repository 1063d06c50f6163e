import math

import pytest
import torch

from losskit._core.registry import get
from losskit.distillation.score_distribution import (
    ScoreDistributionLoss,
    ScoreRankingLoss,
    predicted_score,
    score_distribution_loss,
    score_ranking_loss,
    score_soft_labels,
)

LV = torch.arange(1.0, 6.0, dtype=torch.float64)


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def check_half_precision(fn, x, mu, sd):
    """``x``, ``mu`` and ``sd`` rounded to bfloat16/float16 give finite results of that dtype,
    close to the float32 result on the same rounded inputs, and finite gradients."""
    for dtype in (torch.bfloat16, torch.float16):
        low = x.to(dtype).requires_grad_(True)
        out = fn(low, mu.to(dtype), sd.to(dtype), reduction="none")
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = fn(low.detach().float(), mu.to(dtype).float(), sd.to(dtype).float(), reduction="none")
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
        out.sum().backward()
        assert torch.isfinite(low.grad).all()


def paper_label(mu, sd, density):
    """The paper's label on levels 1..5: discretised Gaussian, then p' = a p + b with a, b
    solving sum p' = 1 and sum p' l = mu (Cramer's rule). Also says whether any entry is
    negative (where the released code clamps)."""
    levels = [1, 2, 3, 4, 5]
    if density == "pdf":
        p = [math.exp(-((x - mu) ** 2) / (2 * sd * sd)) / (sd * math.sqrt(2 * math.pi))
             for x in levels]  # fmt: skip
    else:
        p = [phi((x + 0.5 - mu) / sd) - phi((x - 0.5 - mu) / sd) for x in levels]
    big_a, big_b = sum(p), sum(v * x for v, x in zip(p, levels, strict=True))
    # [A 5; B 15] [a; b] = [1; mu]
    det = big_a * 15 - 5 * big_b
    a, b = (15 - 5 * mu) / det, (big_a * mu - big_b) / det
    out = [a * v + b for v in p]
    return out, min(out) < 0


def random_scores(n, seed=0, low_std=0.0, high_std=2.0):
    g = torch.Generator().manual_seed(seed)
    mu = 1 + 4 * torch.rand(n, generator=g, dtype=torch.float64)
    sd = low_std + (high_std - low_std) * torch.rand(n, generator=g, dtype=torch.float64)
    return mu, sd


@pytest.mark.parametrize("density", ["pdf", "cdf"])
def test_matches_the_papers_affine_correction(density):
    mu, sd = random_scores(400, seed=1, low_std=0.2, high_std=1.5)
    ours = score_soft_labels(mu, sd, density=density)
    unclamped = 0
    for i in range(mu.shape[0]):
        ref, clamped = paper_label(mu[i].item(), sd[i].item(), density)
        if not clamped:
            unclamped += 1
            torch.testing.assert_close(ours[i], torch.tensor(ref, dtype=torch.float64))
    assert unclamped > 100  # the comparison covers most of the range


@pytest.mark.parametrize("density", ["pdf", "cdf"])
def test_labels_are_distributions_with_the_exact_mean(density):
    for thre in (0.2, 0.0):
        mu, sd = random_scores(3000, seed=2)
        mu[:5] = torch.tensor([1.0, 5.0, 3.0, 2.0, 4.999999])
        p = score_soft_labels(mu, sd, density=density, thre_std=thre)
        assert p.dtype == torch.float64 and p.shape == (3000, 5)
        assert (p >= 0).all()
        assert (p.sum(dim=1) - 1).abs().max() < 1e-12
        assert (p @ LV - mu).abs().max() < 1e-10


def test_uneven_levels_keep_the_exact_mean():
    lv = torch.tensor([0.0, 0.5, 2.0, 3.0, 7.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    mu = 7 * torch.rand(500, generator=g, dtype=torch.float64)
    sd = 3 * torch.rand(500, generator=g, dtype=torch.float64)
    for density in ("pdf", "cdf"):
        p = score_soft_labels(mu, sd, lv, density=density)
        assert (p >= 0).all() and (p.sum(1) - 1).abs().max() < 1e-12
        assert (p @ lv - mu).abs().max() < 1e-10


def test_small_std_gives_the_two_adjacent_levels():
    mu = torch.tensor([1.0, 2.3, 3.5, 4.75, 5.0, 3.0], dtype=torch.float64)
    sd = torch.full_like(mu, 1e-6)
    sd[-1] = 0.0
    p = score_soft_labels(mu, sd)
    expected = torch.zeros(6, 5, dtype=torch.float64)
    expected[0, 0] = 1
    expected[1, 1], expected[1, 2] = 0.7, 0.3
    expected[2, 2], expected[2, 3] = 0.5, 0.5
    expected[3, 3], expected[3, 4] = 0.25, 0.75
    expected[4, 4] = 1
    expected[5, 2] = 1
    torch.testing.assert_close(p, expected)


def test_small_std_without_the_fallback_is_the_correction_of_a_one_hot():
    """thre_std = 0: as sigma -> 0 the discretised Gaussian becomes the one-hot of the
    nearest level l_n and the correction gives u + t (onehot - u), t = (mu - 3) / (l_n - 3)."""
    mu = torch.tensor([1.0, 2.3, 4.75, 1.2], dtype=torch.float64)
    p = score_soft_labels(mu, torch.full_like(mu, 1e-6), thre_std=0.0)
    nearest = torch.tensor([1.0, 2.0, 5.0, 1.0], dtype=torch.float64)
    t = (mu - 3) / (nearest - 3)
    onehot = (nearest[:, None] == LV).double()
    torch.testing.assert_close(p, 0.2 + t[:, None] * (onehot - 0.2))
    assert (p @ LV - mu).abs().max() < 1e-12


def test_below_thre_std_is_two_level_and_above_is_not():
    mu = torch.tensor([2.4, 2.4], dtype=torch.float64)
    p = score_soft_labels(mu, torch.tensor([0.19, 0.21], dtype=torch.float64))
    assert (p[0] > 0).sum() == 2 and (p[1] > 0).sum() > 2


@pytest.mark.parametrize("density", ["pdf", "cdf"])
def test_mirror_symmetry(density):
    mu, sd = random_scores(200, seed=4)
    p = score_soft_labels(mu, sd, density=density)
    mirrored = score_soft_labels(6 - mu, sd, density=density)
    torch.testing.assert_close(mirrored, p.flip(1), atol=1e-12, rtol=0)


def test_centre_score_keeps_the_gaussian_shape():
    """At mu = 3 the symmetric discretisation already has mean 3: the label is the
    normalised discretised Gaussian (the released code's 1e-9 gives the uniform label)."""
    mu = torch.tensor([3.0], dtype=torch.float64)
    sd = torch.tensor([0.7], dtype=torch.float64)
    q = torch.exp(-((LV - 3) ** 2) / (2 * 0.49))
    torch.testing.assert_close(score_soft_labels(mu, sd)[0], q / q.sum())


def slow_kl(logits, target):
    out = []
    for z, t in zip(logits.tolist(), target.tolist(), strict=True):
        lse = math.log(sum(math.exp(v) for v in z))
        out.append(
            sum(ti * (math.log(ti) - (zi - lse)) for zi, ti in zip(z, t, strict=True) if ti > 0)
        )
    return torch.tensor(out, dtype=torch.float64)


def logits_and_scores(n=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(n, 5, generator=g, dtype=torch.float64)).to(dtype)
    mu, sd = random_scores(n, seed=seed + 10)
    return logits, mu, sd


def test_loss_matches_slow_kl_and_its_gradient():
    logits, mu, sd = logits_and_scores(8)
    mu[0], sd[0] = 2.0, 0.05  # a one-hot label
    target = score_soft_labels(mu, sd)
    z = logits.clone().requires_grad_(True)
    out = score_distribution_loss(z, mu, sd, reduction="none")
    torch.testing.assert_close(out, slow_kl(logits, target))
    out.sum().backward()
    torch.testing.assert_close(z.grad, torch.softmax(logits, 1) - target)


def test_loss_is_zero_at_the_label_and_predicted_score_is_the_mean():
    mu, sd = random_scores(200, seed=5, low_std=0.3)
    target = score_soft_labels(mu, sd, density="cdf")
    positive = (target > 0).all(dim=1)
    assert positive.sum() > 50
    mu, sd, target = mu[positive], sd[positive], target[positive]
    logits = target.log() + 1.7  # any shift of the logits
    out = score_distribution_loss(logits, mu, sd, density="cdf", reduction="none")
    assert out.abs().max() < 1e-12
    mean, std = predicted_score(logits)
    torch.testing.assert_close(mean, mu, atol=1e-12, rtol=0)
    torch.testing.assert_close(std**2, target @ LV**2 - mu**2)


def test_loss_contract():
    logits, mu, sd = logits_and_scores(6)
    none = score_distribution_loss(logits, mu, sd, reduction="none")
    assert none.shape == (6,)
    torch.testing.assert_close(score_distribution_loss(logits, mu, sd, reduction="sum"), none.sum())
    torch.testing.assert_close(score_distribution_loss(logits, mu, sd), none.mean())
    module = ScoreDistributionLoss(density="cdf")
    torch.testing.assert_close(
        module(logits, mu, sd), score_distribution_loss(logits, mu, sd, density="cdf")
    )
    assert module.levels.dtype == torch.float64 and "levels" in dict(module.named_buffers())
    entry = get("score_distribution")
    assert entry.papers == (35,) and entry.defaults["thre_std"] == 0.2
    torch.testing.assert_close(entry.build()(logits, mu, sd), none.mean())
    z = logits[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: score_distribution_loss(x, mu[:3], sd[:3], reduction="sum"), (z,)
    )


def test_loss_half_precision():
    logits, mu, sd = logits_and_scores(6, seed=7, dtype=torch.float32)
    check_half_precision(score_distribution_loss, logits * 10, mu, sd)


def test_labels_and_loss_bad_inputs():
    logits, mu, sd = logits_and_scores(4, dtype=torch.float32)
    mu, sd = mu.float(), sd.float()
    loss_cases = [
        ((logits[:, :4], mu, sd), {}, "levels"),
        ((logits, mu[:3], sd), {}, "mean"),
        ((logits, mu, sd[:3]), {}, "std"),
        ((logits, mu + 5, sd), {}, "mean"),
        ((logits, mu, -sd), {}, "std"),
        ((logits, mu, torch.full_like(sd, float("nan"))), {}, "std"),
        ((torch.full_like(logits, float("inf")), mu, sd), {}, "logits"),
        ((logits[0], mu, sd), {}, "logits"),
        ((logits, mu.long(), sd), {}, "mean"),
        ((logits, mu, sd), {"density": "gauss"}, "density"),
        ((logits, mu, sd), {"thre_std": -0.1}, "thre_std"),
        ((logits, mu, sd), {"levels": (1, 2, 4, 3, 5)}, "levels"),
        ((logits, mu, sd), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in loss_cases:
        with pytest.raises(ValueError, match=name):
            score_distribution_loss(*args, **kw)
    for args, kw, name in (
        ((mu, sd, (1.0,)), {}, "levels"),
        ((mu[:0], sd[:0]), {}, "mean"),
        ((mu, sd), {"density": "pmf"}, "density"),
    ):
        with pytest.raises(ValueError, match=name):
            score_soft_labels(*args, **kw)
    for kw, name in (({"density": "x"}, "density"), ({"levels": [[1, 2]]}, "levels")):
        with pytest.raises(ValueError, match=name):
            ScoreDistributionLoss(**kw)


def slow_fidelity(s, mu, sd, pairs, eps, pred_sd=None):
    out = []
    for i, j in pairs:
        den = (
            math.sqrt(2) if pred_sd is None else math.sqrt(pred_sd[i] ** 2 + pred_sd[j] ** 2 + eps)
        )
        p = phi((s[i] - s[j]) / den)
        g = phi((mu[i] - mu[j]) / math.sqrt(sd[i] ** 2 + sd[j] ** 2 + eps))
        out.append(1 - math.sqrt(p * g + eps) - math.sqrt((1 - p) * (1 - g) + eps))
    return torch.tensor(out, dtype=torch.float64)


def ranking_inputs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = 1 + 4 * torch.rand(n, generator=g, dtype=torch.float64)
    mu, sd = random_scores(n, seed=seed + 1, low_std=0.1)
    pred_sd = 0.2 + torch.rand(n, generator=g, dtype=torch.float64)
    return s, mu, sd, pred_sd


@pytest.mark.parametrize("with_pred_std", [False, True])
def test_ranking_matches_slow_reference(with_pred_std):
    s, mu, sd, pred_sd = ranking_inputs(7)
    pairs = torch.tensor([[0, 3], [1, 2], [4, 6], [5, 0], [2, 2]])
    ps = pred_sd if with_pred_std else None
    ref = slow_fidelity(s.tolist(), mu.tolist(), sd.tolist(), pairs.tolist(), 1e-8,
                        None if ps is None else ps.tolist())  # fmt: skip
    out = score_ranking_loss(s, mu, sd, pred_std=ps, pairs=pairs, reduction="none")
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(score_ranking_loss(s, mu, sd, pred_std=ps, pairs=pairs), ref.mean())


def test_all_pairs_per_item_and_mean():
    s, mu, sd, _ = ranking_inputs(5, seed=3)
    every = [(i, j) for i in range(5) for j in range(5) if i != j]
    ref = slow_fidelity(s.tolist(), mu.tolist(), sd.tolist(), every, 1e-8).reshape(5, 4)
    torch.testing.assert_close(score_ranking_loss(s, mu, sd, reduction="none"), ref.mean(1))
    torch.testing.assert_close(score_ranking_loss(s, mu, sd), ref.mean())
    torch.testing.assert_close(score_ranking_loss(s, mu, sd, reduction="sum"), ref.mean(1).sum())


def test_fidelity_properties():
    s, mu, sd, _ = ranking_inputs(6, seed=4)
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5]])
    swapped = pairs.flip(1)
    for eps in (1e-8, 0.0):
        torch.testing.assert_close(
            score_ranking_loss(s, mu, sd, pairs=pairs, eps=eps, reduction="none"),
            score_ranking_loss(s, mu, sd, pairs=swapped, eps=eps, reduction="none"),
        )
    # eps = 0: L >= 0, and L = 0 with zero gradient where the predicted preference p equals
    # the human one g (predictions spaced so that (s_i - s_j) / sqrt(2) = the human z-score)
    i, j = pairs[:, 0], pairs[:, 1]
    z = (mu[i] - mu[j]) / torch.sqrt(sd[i] ** 2 + sd[j] ** 2)
    matched = torch.zeros(6, dtype=torch.float64)
    matched[i] = z * math.sqrt(2)
    matched.requires_grad_(True)
    out = score_ranking_loss(matched, mu, sd, pairs=pairs, eps=0.0, reduction="none")
    assert out.abs().max() < 1e-12
    out.sum().backward()
    assert matched.grad.abs().max() < 1e-6
    assert (score_ranking_loss(s, mu, sd, pairs=pairs, eps=0.0, reduction="none") > 0).all()
    # p = g in {0, 1}: far-apart predictions in the human order, exact human scores
    far = torch.tensor([100.0, 0.0], dtype=torch.float64)
    exact = torch.tensor([4.0, 2.0], dtype=torch.float64)
    zero_sd = torch.zeros(2, dtype=torch.float64)
    assert score_ranking_loss(far, exact, zero_sd, eps=0.0) == 0
    assert score_ranking_loss(far, exact.flip(0), zero_sd, eps=0.0) == 1
    assert score_ranking_loss(far, torch.full_like(exact, 3.0), zero_sd, eps=0.0) > 0


def test_ranking_contract():
    s, mu, sd, pred_sd = ranking_inputs(5, seed=6)
    torch.testing.assert_close(ScoreRankingLoss()(s, mu, sd), score_ranking_loss(s, mu, sd))
    entry = get("score_ranking")
    assert entry.papers == (35,) and entry.defaults["eps"] == 1e-8
    x = s.clone().requires_grad_(True)
    pr = pred_sd.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: score_ranking_loss(a, mu, sd, pred_std=b, reduction="sum"), (x, pr)
    )
    mu_g, sd_g = mu.clone().requires_grad_(True), sd.clone().requires_grad_(True)
    score_ranking_loss(x, mu_g, sd_g).backward()
    assert mu_g.grad is None and sd_g.grad is None
    check_half_precision(score_ranking_loss, s, mu, sd)


def test_ranking_bad_inputs():
    s, mu, sd, pred_sd = ranking_inputs(4)
    cases = [
        ((s[:1], mu[:1], sd[:1]), {}, "pred_mean"),
        ((s[:, None], mu, sd), {}, "pred_mean"),
        ((s, mu[:3], sd), {}, "target_mean"),
        ((s, mu, -sd), {}, "target_std"),
        ((s, mu, sd), {"pred_std": -pred_sd}, "pred_std"),
        ((s, mu, sd), {"pred_std": pred_sd[:2]}, "pred_std"),
        ((s, mu, sd), {"pairs": torch.tensor([[0, 4]])}, "pairs"),
        ((s, mu, sd), {"pairs": torch.tensor([0, 1])}, "pairs"),
        ((s, mu, sd), {"pairs": torch.tensor([[0.0, 1.0]])}, "pairs"),
        ((torch.full_like(s, float("nan")), mu, sd), {}, "pred_mean"),
        ((s, mu, sd), {"eps": -1.0}, "eps"),
        ((s, mu, sd), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            score_ranking_loss(*args, **kw)
    with pytest.raises(ValueError, match="eps"):
        ScoreRankingLoss(eps=2.0)
