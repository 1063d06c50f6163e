"""RCAL (paper 32): LOF against scikit-learn, Gaussian moments and tail calibration against
slow loops, sampling moments, the plain-CE reduction of the training stage, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit.procedures.rcal import individual_calibration_loss, rcal
from losskit.procedures.rcal_statistics import (
    ClassGaussians,
    calibrate_tail,
    class_gaussians,
    local_outlier_factor,
    lof_inliers,
    robust_class_gaussians,
    sample_class_gaussians,
)

sk_neighbors = pytest.importorskip("sklearn.neighbors")


def _blobs(counts, dim=4, seed=0, spread=6.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(len(counts), dim))
    y = np.repeat(np.arange(len(counts)), counts)
    z = centres[y] + rng.normal(size=(len(y), dim)) * rng.uniform(0.5, 2.0, size=dim)
    return z, y


# ------------------------------------------------------------------------ LOF
@pytest.mark.parametrize("n,dim,k", [(40, 3, 20), (25, 16, 5), (6, 2, 20), (2, 3, 4)])
def test_lof_equals_sklearn(n, dim, k):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(n, dim))
    z[:2] += 5.0  # a couple of outliers
    ref = sk_neighbors.LocalOutlierFactor(n_neighbors=min(k, n - 1)).fit(z)
    np.testing.assert_allclose(
        local_outlier_factor(z, n_neighbors=k), -ref.negative_outlier_factor_, rtol=1e-12
    )


@pytest.mark.parametrize("contamination", [None, 0.1, 0.3])
def test_lof_inliers_equal_sklearn_per_class(contamination):
    z, y = _blobs([30, 22, 15], seed=1)
    z[[0, 31, 60]] += 8.0  # one far point in every class
    keep = lof_inliers(z, y, 3, n_neighbors=10, contamination=contamination)
    for c in range(3):
        idx = np.flatnonzero(y == c)
        model = sk_neighbors.LocalOutlierFactor(
            n_neighbors=10, contamination="auto" if contamination is None else contamination
        )
        np.testing.assert_array_equal(keep[idx], model.fit_predict(z[idx]) == 1)
    assert not keep[[0, 31, 60]].any()


def test_lof_threshold_keeps_densest_and_singletons():
    z, y = _blobs([1, 12], seed=2)
    keep = lof_inliers(z, y, 2, threshold=1.0)
    assert keep[0]  # a class of one sample keeps it
    lof = local_outlier_factor(z[1:])
    assert keep[1:][np.argmin(lof)] and np.min(lof) <= 1.0


# ------------------------------------------------------------------ Gaussians
def test_class_gaussians_equal_loops():
    z, y = _blobs([9, 5, 1], dim=3, seed=3)
    keep = np.ones(len(y), dtype=bool)
    keep[[0, 2, 10]] = False
    means, covs, counts = class_gaussians(z, y, 3, keep=keep)
    for c in range(3):
        rows = [z[i] for i in range(len(y)) if y[i] == c and keep[i]]
        assert counts[c] == len(rows)
        mu = sum(rows) / len(rows)
        cov = np.zeros((3, 3))
        for r in rows:
            for a in range(3):
                for b in range(3):
                    cov[a, b] += (r[a] - mu[a]) * (r[b] - mu[b])
        cov = cov / (len(rows) - 1) if len(rows) > 1 else cov  # one sample: zero covariance
        np.testing.assert_allclose(means[c], mu, rtol=1e-12)
        np.testing.assert_allclose(covs[c], cov, rtol=1e-10, atol=1e-12)


def _slow_calibration(mu, cov, sizes, q, num_head, alpha):
    c, d = mu.shape
    ranked = sorted(range(c), key=lambda k: (-sizes[k], k))
    head, tail = ranked[:num_head], ranked[num_head:]
    out_mu, out_cov = mu.copy(), cov.copy()
    for k in tail:
        dists = []
        for j in head:
            dists.append((sum((mu[j][i] - mu[k][i]) ** 2 for i in range(d)), j))
        near = [j for _, j in sorted(dists)[:q]]
        out_mu[k] = (mu[k] + sum(mu[j] for j in near)) / (q + 1)
        out_cov[k] = (cov[k] + sum(cov[j] for j in near)) / (q + 1) + alpha * np.eye(d)
    return out_mu, out_cov


@pytest.mark.parametrize("q,num_head,alpha", [(1, 3, 0.0), (2, 3, 0.5), (3, 4, 0.1), (0, 2, 1.0)])
def test_tail_calibration_equals_slow_reference(q, num_head, alpha):
    z, y = _blobs([40, 35, 30, 20, 9, 6, 4], dim=5, seed=4)
    means, covs, counts = class_gaussians(z, y, 7)
    got = calibrate_tail(means, covs, counts, q=q, num_head=num_head, alpha=alpha)
    ref_mu, ref_cov = _slow_calibration(means, covs, counts, q, num_head, alpha)
    np.testing.assert_allclose(got.means, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(got.covariances, ref_cov, rtol=1e-12)
    assert got.tail.tolist() == [False] * num_head + [True] * (7 - num_head)
    assert got.borrowed.shape == (7, q)
    for k in np.flatnonzero(got.tail):
        assert set(got.borrowed[k]) <= set(range(num_head))  # sizes decrease with the id


def test_clean_balanced_without_calibration_gives_empirical_moments():
    z, y = _blobs([50] * 4, dim=3, seed=5)
    for kw in ({"q": 0}, {"q": 2, "num_head": 4}):  # no borrowing, or no tail class
        stats, keep = robust_class_gaussians(z, y, 4, lof_threshold=None, **kw)
        assert keep.all()
        for c in range(4):
            np.testing.assert_allclose(stats.means[c], z[y == c].mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(stats.covariances[c], np.cov(z[y == c].T), rtol=1e-10)
        np.testing.assert_array_equal(stats.counts, [50] * 4)


def test_robust_estimate_ignores_mislabelled_far_points():
    z, y = _blobs([60, 60], dim=2, seed=6, spread=20.0)
    clean_mu = z[y == 0].mean(axis=0)
    bad = z[y == 1][:6]  # six class-1 points labelled 0
    zz, yy = np.concatenate([z, bad]), np.concatenate([y, np.zeros(6, dtype=np.int64)])
    stats, keep = robust_class_gaussians(zz, yy, 2, lof_neighbors=10, q=0)
    assert not keep[-6:].any()
    naive = zz[yy == 0].mean(axis=0)
    assert np.linalg.norm(stats.means[0] - clean_mu) < 0.1 * np.linalg.norm(naive - clean_mu)


# ------------------------------------------------------------------- sampling
def test_samples_have_the_calibrated_moments():
    """200,000 draws per class; tolerance 5 standard errors per entry (seeded, no flakes):
    mean ``5 sqrt(S_ii / n)``, covariance ``5 sqrt((S_ii S_jj + S_ij^2) / n)``."""
    z, y = _blobs([30, 8, 3], dim=3, seed=7)  # class 2: 3 samples, a singular covariance
    means, covs, counts = class_gaussians(z, y, 3)
    stats = calibrate_tail(means, covs, counts, q=1, num_head=1)
    n = 200_000
    x, labels = sample_class_gaussians(stats, n, rng=0)
    np.testing.assert_array_equal(np.bincount(labels), [n] * 3)
    for c in range(3):
        mu, s = stats.means[c], stats.covariances[c]
        xc = x[labels == c]
        var = np.diag(s)
        assert np.all(np.abs(xc.mean(axis=0) - mu) <= 5 * np.sqrt(var / n) + 1e-12)
        tol = 5 * np.sqrt((np.outer(var, var) + s**2) / n) + 1e-12
        assert np.all(np.abs(np.cov(xc.T) - s) <= tol)


def test_singular_covariance_samples_stay_in_its_span():
    stats = ClassGaussians(
        means=np.array([[1.0, 2.0, 3.0]]),
        covariances=np.outer([1.0, -1.0, 0.0], [1.0, -1.0, 0.0])[None],
        counts=np.array([2]),
        tail=np.array([False]),
        borrowed=np.zeros((1, 0), dtype=np.int64),
    )
    x, _ = sample_class_gaussians(stats, 500, rng=np.random.default_rng(1))
    d = x - stats.means[0]
    np.testing.assert_allclose(d[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(d[:, 0], -d[:, 1], atol=1e-12)


def test_per_class_counts_and_determinism():
    z, y = _blobs([10, 10], dim=2, seed=8)
    stats, _ = robust_class_gaussians(z, y, 2, lof_threshold=None)
    a, la = sample_class_gaussians(stats, np.array([3, 0]), rng=5)
    b, lb = sample_class_gaussians(stats, np.array([3, 0]), rng=5)
    np.testing.assert_array_equal(la, [0, 0, 0])
    np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------- training stage
def test_individual_calibration_loss_formula_and_gradient():
    f = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = individual_calibration_loss(f, r)
    ref = sum(float(((f[i] - r[i]) ** 2).sum().detach()) for i in range(5)) / 5
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-12)
    loss.backward()
    assert r.grad is None  # the reference is a target, not trained
    torch.testing.assert_close(f.grad, 2 * (f - r).detach() / 5)


def _data(seed=0):
    z, y = _blobs([40, 20, 8], dim=6, seed=seed)
    return torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(y)


def _encoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())


def test_plain_training_when_every_rcal_term_is_off():
    x, y = _data()
    enc, head = _encoder(), nn.Linear(8, 3)
    ref_enc, ref_head = _encoder(), nn.Linear(8, 3)
    ref_head.load_state_dict(head.state_dict())
    res = rcal(enc, x, y, 3, classifier=head, pretrain_epochs=0, epochs=3, batch_size=16,
               reg_weight=0.0, mixup_alpha=0.0, samples_per_class=0, seed=3)  # fmt: skip
    opt = torch.optim.Adam([*ref_enc.parameters(), *ref_head.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(16):
            loss = F.cross_entropy(ref_head(ref_enc(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        torch.testing.assert_close(res.logits(x), ref_head(ref_enc(x)), rtol=0, atol=0)


def test_rcal_result_structure_and_determinism():
    x, y = _data(1)
    clean = y.clone()
    y = y.clone()
    y[:6] = 2  # six head samples mislabelled as the tail class
    runs = []
    for _ in range(2):
        res = rcal(_encoder(2), x, y, 3, pretrain_epochs=2, epochs=2, batch_size=16,
                   lof_neighbors=5, clean=clean, num_head=1, seed=4,
                   evaluate=lambda e, h, epoch: {"marker": epoch})  # fmt: skip
        runs.append(res.logits(x))
    assert len(res.pretrain_history) == 2 and len(res.history) == 2
    assert res.history[-1]["marker"] == 1 and {"loss", "ce", "sampled_ce", "reg"} <= set(
        res.history[0]
    )
    assert res.reference.shape == (len(x), 8) and res.inliers.shape == (len(x),)
    assert res.gaussians.means.shape == (3, 8) and res.gaussians.covariances.shape == (3, 8, 8)
    assert res.gaussians.tail.tolist() == [False, True, True]
    d = res.diagnostics
    assert d["clean_fraction"] == pytest.approx(1 - 6 / len(x))
    assert 0.0 <= d["kept_clean_fraction"] <= 1.0 and 0.0 <= d["removed_noisy_recall"] <= 1.0
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise():
    z, y = _blobs([10, 10, 10], dim=3, seed=9)
    means, covs, counts = class_gaussians(z, y, 3)
    bad_z = z.copy()
    bad_z[0, 0] = np.nan
    cases = [
        lambda: local_outlier_factor(z[:1]),
        lambda: local_outlier_factor(bad_z),
        lambda: local_outlier_factor(z, n_neighbors=0),
        lambda: lof_inliers(z, y, 3, threshold=0.5),
        lambda: lof_inliers(z, y, 3, contamination=0.7),
        lambda: lof_inliers(z, y[:-1], 3),
        lambda: class_gaussians(z, y, 4),  # class 3 has no sample
        lambda: class_gaussians(z, y + 1, 3),  # label 3 out of range
        lambda: class_gaussians(z[:, :, None], y, 3),
        lambda: calibrate_tail(means, covs, counts, q=2, num_head=1),
        lambda: calibrate_tail(means, covs, counts, alpha=-1.0),
        lambda: calibrate_tail(means, covs[:, :2], counts),
        lambda: calibrate_tail(means, covs, counts[:2]),
        lambda: calibrate_tail(means, covs, counts, num_head=4),
    ]
    for case in cases:
        with pytest.raises(ValueError):
            case()
    stats = calibrate_tail(means, covs, counts)
    for per_class in (-1, np.array([1, 2]), 1.5):
        with pytest.raises(ValueError, match="per_class"):
            sample_class_gaussians(stats, per_class, rng=0)
    with pytest.raises(ValueError, match="reference"):
        individual_calibration_loss(torch.zeros(2, 3), torch.zeros(3, 3))


def test_rcal_bad_inputs_raise():
    x, y = _data()
    kw = {"pretrain_epochs": 0, "epochs": 1}
    for bad in (
        {"x": x.long()},
        {"y": y[:-1]},
        {"y": y + 5},
        {"epochs": 0},
        {"reg_weight": -1.0},
        {"mixup_alpha": float("nan")},
        {"samples_per_class": -2},
        {"lr": 0.0},
    ):
        args = {"x": x, "y": y, **kw, **bad}
        with pytest.raises(ValueError):
            rcal(_encoder(), args.pop("x"), args.pop("y"), 3, **args)
    with pytest.raises(ValueError, match="clean"):
        rcal(_encoder(), x, y, 3, clean=y[:3], **kw)
    with pytest.raises(ValueError, match="encoder"):
        rcal(nn.Flatten(0), x, y, 3, **kw)
