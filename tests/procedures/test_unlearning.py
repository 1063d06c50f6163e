import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit.procedures.unlearning import (
    RepresentationVAE,
    fit_representation_vae,
    laf_alignment_loss,
    laf_extractor_loss,
    laf_unlearn,
    vae_loss,
)
from losskit.procedures.unlearning_baselines import (
    finetune_unlearn,
    predict_logits,
    retrain_unlearn,
    train_classifier,
)
from losskit.procedures.unlearning_mia import (
    _stratified_folds,
    attack_features,
    fit_logistic,
    membership_inference_score,
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _slow_ue(rr, er, rf, ef):
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(er)):
        m = sum((rr[i, k] - er[i, k]) ** 2 for k in range(er.shape[1]))
        total = total + torch.exp(m / (m + 1))
    for j in range(len(ef)):
        m = sum((rf[j, k] - ef[j, k]) ** 2 for k in range(ef.shape[1]))
        total = total - torch.exp(m / (m + 1))
    return total


def _cos_distance(a, b):
    return 1 - (a * b).sum() / (a.norm() * b.norm())


def _slow_ra(er, er0, ef, ef0, t):
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(er)):
        denominator = sum(torch.exp(_cos_distance(ef[j], ef0[j]) / t) for j in range(len(ef)))
        total = total + torch.log(torch.exp(_cos_distance(er[i], er0[i])) / denominator)
    return total


def test_extractor_loss_matches_loop_forward_and_gradient():
    rr, er, rf, ef = (_rand(n, 5, seed=s).requires_grad_() for s, n in enumerate((4, 4, 3, 3)))
    fast, slow = laf_extractor_loss(rr, er, rf, ef), _slow_ue(rr, er, rf, ef)
    torch.testing.assert_close(fast, slow)
    g_fast = torch.autograd.grad(fast, (er, ef))
    g_slow = torch.autograd.grad(slow, (er, ef))
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b)


def test_extractor_term_lies_in_one_to_e_and_grows_with_m():
    e = torch.zeros(1, 1, dtype=torch.float64)
    m = torch.tensor([0.0, 0.1, 1.0, 10.0, 1e3, 1e6], dtype=torch.float64)
    # forget term with m = 0 is exp(0) = 1, so the loss is phi(m_r) - 1
    phi = torch.stack([laf_extractor_loss(v.sqrt().view(1, 1), e, e, e) + 1 for v in m])
    assert phi[0] == 1.0 and bool((phi >= 1).all()) and bool((phi < math.e).all())
    assert bool((phi.diff() > 0).all())


def test_alignment_loss_matches_loop_forward_and_gradient():
    er, er0, ef, ef0 = (_rand(n, 6, seed=s).requires_grad_() for s, n in enumerate((5, 5, 3, 3)))
    for t in (1.0, 5.0, 20.0):
        fast = laf_alignment_loss(er, er0, ef, ef0, temperature=t)
        slow = _slow_ra(er, er0, ef, ef0, t)
        torch.testing.assert_close(fast, slow)
        g_fast = torch.autograd.grad(fast, (er, ef))
        g_slow = torch.autograd.grad(slow, (er, ef))
        for a, b in zip(g_fast, g_slow, strict=True):
            torch.testing.assert_close(a, b)


def test_alignment_loss_at_identical_representations():
    er, ef = _rand(7, 4, seed=1).requires_grad_(), _rand(3, 4, seed=2)
    loss = laf_alignment_loss(er, er.detach(), ef, ef.clone(), temperature=5.0)
    torch.testing.assert_close(loss, torch.tensor(-7 * math.log(3), dtype=torch.float64))
    # the remaining-data term is at its minimum: zero gradient, any move raises the loss
    (grad,) = torch.autograd.grad(loss, er)
    torch.testing.assert_close(grad, torch.zeros_like(grad))
    shifted = er.detach() + 0.1 * _rand(7, 4, seed=3)
    moved = laf_alignment_loss(shifted, er.detach(), ef, ef, temperature=5.0)
    assert moved > loss


def test_vae_loss_formula():
    recon, e, mu, log_var = (_rand(4, d, seed=s) for s, d in enumerate((3, 3, 2, 2)))
    sq = sum(float(((recon[i] - e[i]) ** 2).sum()) for i in range(4))
    kl = sum(
        0.5 * (math.exp(log_var[i, k]) + mu[i, k] ** 2 - 1 - log_var[i, k])
        for i in range(4)
        for k in range(2)
    )
    assert float(vae_loss(recon, e, mu, log_var, 0.025)) == pytest.approx((sq + 0.025 * kl) / 4)


def test_fitted_vae_reconstructs_better_than_at_initialisation():
    e = (_rand(100, 2, seed=4) @ _rand(2, 16, seed=5)).float()
    g = torch.Generator().manual_seed(0)

    def error(vae):
        with torch.no_grad():
            return float((vae(e, g)[0] - e).pow(2).sum(1).mean())

    torch.manual_seed(0)
    untrained = RepresentationVAE(16, 2)
    vae = fit_representation_vae(e, latent_dim=2, epochs=20, seed=0)
    assert error(vae) < 0.5 * error(untrained)


def _toy():
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(3, 8, generator=g)
    y = torch.arange(3).repeat_interleave(40)
    x = centres[y] + torch.randn(120, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    train_classifier(model, x, y, epochs=30, seed=0)
    return model, x, y


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_zero_epochs_leave_the_model_unchanged_and_the_input_is_never_modified():
    model, x, y = _toy()
    enc, forget = model[:-1], y == 2
    before = _state(enc)
    result = laf_unlearn(enc, x[~forget], x[forget], epochs=0, vae_epochs=1)
    for k, v in result.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert result.ue_loss == [] and result.ra_loss == []
    changed = laf_unlearn(enc, x[~forget], x[forget], epochs=3, lr_ue=1e-2, lr_ra=1e-2)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, before[k]) for k, v in changed.encoder.state_dict().items())


def test_laf_takes_no_labels_and_is_deterministic():
    params = set(inspect.signature(laf_unlearn).parameters)
    assert not params & {"y", "labels", "target", "y_remain", "y_forget", "targets"}
    model, x, y = _toy()
    forget = y == 2
    runs = [laf_unlearn(model[:-1], x[~forget], x[forget], epochs=2, seed=3) for _ in range(2)]
    for k, v in runs[0].encoder.state_dict().items():
        torch.testing.assert_close(v, runs[1].encoder.state_dict()[k], rtol=0, atol=0)
    assert runs[0].ue_loss == runs[1].ue_loss and len(runs[0].ra_loss) == 2


def test_laf_moves_forgotten_representations_more_than_remaining_ones():
    model, x, y = _toy()
    enc, forget = model[:-1], y == 2
    seen = []
    result = laf_unlearn(
        enc, x[~forget], x[forget], epochs=40, lr_ue=1e-3, lr_ra=2e-3, seed=0,
        on_epoch=lambda epoch, e: seen.append(epoch),
    )  # fmt: skip
    assert seen == list(range(1, 41))
    with torch.no_grad():
        d = 1 - F.cosine_similarity(result.encoder(x), enc(x), dim=1)
    assert float(d[forget].mean()) > 5 * float(d[~forget].mean())
    head = model[-1]
    pred = head(result.encoder(x)).argmax(1)
    assert float((pred[forget] == 2).float().mean()) < 0.5
    assert float((pred[~forget] == y[~forget]).float().mean()) > 0.9


def test_baselines_train_and_leave_the_input_untouched():
    model, x, y = _toy()
    assert float((predict_logits(model, x).argmax(1) == y).float().mean()) > 0.95
    before = _state(model)
    keep = y != 2
    tuned = finetune_unlearn(model, x[keep], y[keep], epochs=2)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, before[k]) for k, v in tuned.state_dict().items())

    def make():
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    a = retrain_unlearn(make, x[keep], y[keep], epochs=20, seed=1)
    b = retrain_unlearn(make, x[keep], y[keep], epochs=20, seed=1)
    torch.testing.assert_close(a[0].weight, b[0].weight, rtol=0, atol=0)
    assert float((predict_logits(a, x[~keep]).argmax(1) == 2).float().mean()) == 0.0
    unchanged = train_classifier(make(), x, y, epochs=0)
    assert isinstance(unchanged, nn.Module)


def test_attack_features_sorted_normalised_and_label_free():
    z = _rand(6, 4, seed=7)
    f = attack_features(z)
    assert np.all(np.diff(f, axis=1) <= 0)
    np.testing.assert_allclose(np.exp(f).sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(attack_features(z[:, [2, 0, 3, 1]] + 5.0), f, atol=1e-12)


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_fit_logistic_is_the_unique_minimiser(C):
    # the objective is strictly convex: a zero gradient (written out here) is the minimum,
    # and nudging any coordinate raises the objective
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4))
    y = (x @ [1.0, -2.0, 0.5, 0.0] + rng.normal(size=150) > 0).astype(int)
    w, b = fit_logistic(x, y, C=C)
    s = 2 * y - 1

    def objective(w, b):
        losses = [math.log1p(math.exp(-s[i] * (x[i] @ w + b))) for i in range(150)]
        return 0.5 * w @ w + C * sum(losses)

    p = 1 / (1 + np.exp(s * (x @ w + b)))
    np.testing.assert_allclose(w - C * x.T @ (s * p), 0.0, atol=1e-8)
    assert abs(C * float((s * p).sum())) < 1e-8
    best = objective(w, b)
    for k in range(5):
        nudge = np.eye(5)[k] * 1e-3
        assert objective(w + nudge[:4], b + nudge[4]) > best
        assert objective(w - nudge[:4], b - nudge[4]) > best


def test_folds_are_stratified():
    y = np.r_[np.ones(23, int), np.zeros(23, int)]
    fold = _stratified_folds(y, 5, np.random.default_rng(0))
    for k in range(5):
        assert abs(int((y[fold == k] == 1).sum()) - int((y[fold == k] == 0).sum())) == 0


def test_mia_is_chance_for_identical_distributions():
    rng = np.random.default_rng(1)
    scores = [
        membership_inference_score(rng.normal(size=(80, 5)), rng.normal(size=(200, 5)), seed=s)
        for s in range(20)
    ]
    assert abs(np.mean(scores) - 0.5) < 0.03


def test_mia_is_near_one_for_memorised_members():
    rng = np.random.default_rng(2)
    members = rng.normal(size=(60, 10)) + 12 * np.eye(10)[rng.integers(0, 10, 60)]
    nonmembers = rng.normal(size=(60, 10))
    assert membership_inference_score(members, nonmembers) > 0.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"x_remain": torch.zeros(0, 8)},
        {"x_forget": torch.full((3, 8), float("nan"))},
        {"x_forget": torch.zeros(3, 5)},
        {"x_remain": torch.zeros(4, 8, dtype=torch.int64)},
        {"x_remain": np.zeros((4, 8))},
        {"epochs": -1},
        {"epochs": 1.5},
        {"batch_size": 0},
        {"latent_dim": 0},
        {"lr_ue": 0.0},
        {"lr_ra": -1e-3},
        {"temperature": 0.0},
        {"kl_weight": float("nan")},
    ],
)
def test_laf_bad_inputs(kwargs):
    enc = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    args = {"x_remain": torch.randn(6, 8), "x_forget": torch.randn(3, 8), **kwargs}
    x_r, x_f = args.pop("x_remain"), args.pop("x_forget")
    with pytest.raises(ValueError):
        laf_unlearn(enc, x_r, x_f, epochs=args.pop("epochs", 1), vae_epochs=1, **args)


def test_encoder_must_return_rows():
    with pytest.raises(ValueError, match="encoder"):
        laf_unlearn(nn.Unflatten(1, (2, 4)), torch.randn(6, 8), torch.randn(3, 8))


def test_loss_bad_inputs():
    a, b = torch.randn(3, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="temperature"):
        laf_alignment_loss(a, a, b, b, temperature=0.0)
    with pytest.raises(ValueError, match="e_forget"):
        laf_alignment_loss(a, a, b, torch.randn(2, 5))
    with pytest.raises(ValueError, match="e_remain"):
        laf_alignment_loss(a[:0], a[:0], b, b)
    with pytest.raises(ValueError, match="recon_remain"):
        laf_extractor_loss(a, b, b, b)
    with pytest.raises(ValueError):
        RepresentationVAE(0)


def test_baseline_and_mia_bad_inputs():
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 0])
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="y"):
        train_classifier(model, x, y.float(), epochs=1)
    with pytest.raises(ValueError, match="y"):
        train_classifier(model, x, -torch.ones(5, dtype=torch.int64), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(model, x, y, epochs=-1)
    with pytest.raises(ValueError, match="lr"):
        train_classifier(model, x, y, epochs=1, lr=0.0)
    good = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="same classes"):
        membership_inference_score(good, good[:, :2])
    with pytest.raises(ValueError, match="folds"):
        membership_inference_score(good[:3], good)
    with pytest.raises(ValueError, match="folds"):
        membership_inference_score(good, good, folds=1)
    with pytest.raises(ValueError, match="finite"):
        membership_inference_score(np.full((10, 3), np.nan), good)
    with pytest.raises(ValueError, match="logits"):
        membership_inference_score(good[:, 0], good)
