import numpy as np
import pytest

from losskit._core.registry import get
from losskit.diagnostics.memorization import (
    influence_estimate,
    memorization_estimate,
    subsample_models,
    subset_membership,
)


def slow_memorization(membership, correct):
    """mem(i) by looping over the models: mean correctness with i minus without i."""
    m, n = membership.shape
    score, n_in, n_out = np.full(n, np.nan), np.zeros(n, int), np.zeros(n, int)
    for i in range(n):
        inside, outside = [], []
        for k in range(m):
            (inside if membership[k, i] else outside).append(float(correct[k, i]))
        n_in[i], n_out[i] = len(inside), len(outside)
        if inside and outside:
            score[i] = sum(inside) / len(inside) - sum(outside) / len(outside)
    return score, n_in, n_out


def slow_influence(membership, correct_test):
    m, n = membership.shape
    score = np.full((n, correct_test.shape[1]), np.nan)
    for i in range(n):
        for j in range(correct_test.shape[1]):
            inside = [float(correct_test[k, j]) for k in range(m) if membership[k, i]]
            outside = [float(correct_test[k, j]) for k in range(m) if not membership[k, i]]
            if inside and outside:
                score[i, j] = np.mean(inside) - np.mean(outside)
    return score


def random_case(seed, m=9, n=7, t=5, soft=False):
    rng = np.random.default_rng(seed)
    membership = rng.random((m, n)) < 0.6
    membership[:, 0] = True  # always included: no estimate
    membership[:, 1] = False  # never included: no estimate
    if soft:
        return membership, rng.random((m, n)), rng.random((m, t))
    return membership, rng.random((m, n)) < 0.7, rng.random((m, t)) < 0.5


def one_nn(x, y, seed):
    return x, y


def one_nn_predict(model, x):
    xs, ys = model
    d = ((x[:, None, :] - xs[None, :, :]) ** 2).sum(-1)
    return ys[d.argmin(axis=1)]


def constant(x, y, seed):
    return 3


def constant_predict(model, x):
    return np.full(len(x), model)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimates_equal_slow_loops(seed, soft):
    membership, correct, correct_test = random_case(seed, soft=soft)
    est = memorization_estimate(membership, correct)
    score, n_in, n_out = slow_memorization(membership, correct)
    np.testing.assert_allclose(est.score, score, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(est.n_in, n_in)
    np.testing.assert_array_equal(est.n_out, n_out)
    assert np.isnan(est.score[:2]).all() and not np.isnan(est.score[2:]).any()
    assert np.isnan(est.acc_out[0]) and np.isnan(est.acc_in[1])
    np.testing.assert_allclose(est.acc_in[2:] - est.acc_out[2:], est.score[2:], atol=1e-15)
    infl = influence_estimate(membership, correct_test)
    np.testing.assert_allclose(
        infl.score, slow_influence(membership, correct_test), atol=1e-12, equal_nan=True
    )
    np.testing.assert_array_equal(infl.n_in, n_in)
    np.testing.assert_array_equal(infl.n_out, n_out)


def test_one_nn_with_distinct_labels_memorizes_every_example():
    rng = np.random.default_rng(0)
    n = 15
    x = rng.normal(size=(n, 3))  # distinct points
    y = rng.permutation(n)  # every point its own label: a left-out point is always wrong
    runs = subsample_models(one_nn, one_nn_predict, x, y, num_models=40, fraction=0.7, seed=1)
    est = memorization_estimate(runs.membership, runs.train_correct)
    assert (est.n_in > 0).all() and (est.n_out > 0).all()
    np.testing.assert_array_equal(est.score, np.ones(n))


def test_one_nn_with_random_labels_fits_every_included_example():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 2)), rng.integers(0, 3, size=20)
    runs = subsample_models(one_nn, one_nn_predict, x, y, num_models=30, fraction=0.5, seed=2)
    est = memorization_estimate(runs.membership, runs.train_correct)
    np.testing.assert_array_equal(est.acc_in, np.ones(20))  # training accuracy 1
    np.testing.assert_array_equal(est.score, 1.0 - est.acc_out)


def test_model_that_ignores_its_data_memorizes_nothing():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 2)), rng.integers(0, 5, size=12)
    x_test, y_test = rng.normal(size=(6, 2)), rng.integers(0, 5, size=6)
    runs = subsample_models(
        constant, constant_predict, x, y, x_test, y_test, num_models=25, fraction=0.6, seed=0
    )
    est = memorization_estimate(runs.membership, runs.train_correct)
    assert (est.n_in > 0).all() and (est.n_out > 0).all()
    np.testing.assert_array_equal(est.score, np.zeros(12))
    infl = influence_estimate(runs.membership, runs.test_correct)
    np.testing.assert_array_equal(infl.score, np.zeros((12, 6)))


def test_influence_on_copies_of_training_points():
    rng = np.random.default_rng(3)
    n = 10
    x, y = rng.normal(size=(n, 2)), rng.integers(0, 2, size=n)
    runs = subsample_models(one_nn, one_nn_predict, x, y, x, y, num_models=30, fraction=0.7, seed=4)
    est = memorization_estimate(runs.membership, runs.train_correct)
    infl = influence_estimate(runs.membership, runs.test_correct)
    np.testing.assert_array_equal(runs.test_correct, runs.train_correct)
    np.testing.assert_array_equal(np.diag(infl.score), est.score)  # infl(i, copy of i) = mem(i)
    unique = subsample_models(
        one_nn, one_nn_predict, x, np.arange(n), x, np.arange(n), num_models=30, seed=4
    )
    np.testing.assert_array_equal(
        np.diag(influence_estimate(unique.membership, unique.test_correct).score), np.ones(n)
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_influence_symmetries(seed):
    membership, _, correct_test = random_case(seed, soft=True)
    base = influence_estimate(membership, correct_test)
    flipped = influence_estimate(membership, 1.0 - correct_test)  # success <-> failure
    np.testing.assert_allclose(flipped.score, -base.score, atol=1e-12, equal_nan=True)
    swapped = influence_estimate(~membership, correct_test)  # with i <-> without i
    np.testing.assert_allclose(swapped.score, -base.score, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(swapped.n_in, base.n_out)
    order = np.random.default_rng(seed).permutation(len(membership))  # model order
    shuffled = influence_estimate(membership[order], correct_test[order])
    np.testing.assert_allclose(shuffled.score, base.score, atol=1e-12, equal_nan=True)
    cols = np.array([2, 0, 2, 4])  # test examples permuted and repeated
    picked = influence_estimate(membership, correct_test[:, cols])
    np.testing.assert_allclose(picked.score, base.score[:, cols], atol=1e-12, equal_nan=True)


def test_subset_membership():
    a = subset_membership(6, 10, 0.7, seed=3)
    assert a.dtype == bool and a.shape == (6, 10)
    np.testing.assert_array_equal(a.sum(axis=1), np.full(6, 7))
    np.testing.assert_array_equal(a, subset_membership(6, 10, 0.7, seed=3))
    assert not np.array_equal(a, subset_membership(6, 10, 0.7, seed=4))


def test_driver_trains_on_the_recorded_subsets():
    seen = []

    def train(x, y, seed):
        seen.append((x.copy(), y.copy(), seed))
        return 0

    x, y = np.arange(8)[:, None] * 10, np.arange(8) % 3
    runs = subsample_models(train, constant_predict, x, y, num_models=5, fraction=0.5, seed=7)
    assert len(seen) == 5
    for k, (xs, ys, s) in enumerate(seen):
        idx = np.flatnonzero(runs.membership[k])
        np.testing.assert_array_equal(xs[:, 0], idx * 10)
        np.testing.assert_array_equal(ys, y[idx])
        assert isinstance(s, int)
    np.testing.assert_array_equal(runs.train_pred, np.zeros((5, 8)))
    np.testing.assert_array_equal(runs.train_correct, np.tile(y == 0, (5, 1)))
    assert runs.test_pred is None and runs.test_correct is None
    again = subsample_models(train, constant_predict, x, y, num_models=5, fraction=0.5, seed=7)
    np.testing.assert_array_equal(again.membership, runs.membership)
    assert [s for *_, s in seen[5:]] == [s for *_, s in seen[:5]]


def test_bad_inputs():
    membership, correct, correct_test = random_case(0)
    with pytest.raises(ValueError, match="membership must be a boolean"):
        memorization_estimate(membership.astype(int), correct)
    with pytest.raises(ValueError, match="membership must have shape"):
        memorization_estimate(membership[0], correct[0])
    with pytest.raises(ValueError, match="correct must have shape"):
        memorization_estimate(membership, correct[:, :3])
    with pytest.raises(ValueError, match="correct must have shape"):
        memorization_estimate(membership, correct[:4])
    with pytest.raises(ValueError, match="correct_test must have shape"):
        influence_estimate(membership, correct_test[:4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        memorization_estimate(membership, correct * 2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        influence_estimate(membership, np.full(correct_test.shape, np.nan))
    with pytest.raises(ValueError, match="correct_test must be a boolean or numeric"):
        influence_estimate(membership, correct_test.astype(str))
    for fraction in (0.0, 1.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            subset_membership(3, 10, fraction, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        subset_membership(3, 10, 0.01, seed=0)  # rounds to an empty subset
    with pytest.raises(ValueError, match="num_models"):
        subset_membership(0, 10, 0.5, seed=0)
    x, y = np.zeros((6, 2)), np.zeros(6, int)
    with pytest.raises(ValueError, match="same number of rows"):
        subsample_models(constant, constant_predict, x, y[:5], num_models=2)
    with pytest.raises(ValueError, match="given together"):
        subsample_models(constant, constant_predict, x, y, x, num_models=2)
    with pytest.raises(ValueError, match="X_test and y_test"):
        subsample_models(constant, constant_predict, x, y, x, y[:4], num_models=2)
    with pytest.raises(ValueError, match="predict_fn"):
        subsample_models(constant, lambda m, x: np.zeros(2), x, y, num_models=2)


def test_registered():
    assert get("subsampled_memorization").papers == (39,)
    assert get("subsampled_influence").function is influence_estimate
