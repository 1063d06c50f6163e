"""Cross-validated predicted probabilities (paper 34): folds, out-of-sample guarantee with
memorising models, the linear heads, and the digits check of the reference map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losskit.labels.cross_validation import (
    cross_val_pred_probs,
    cross_val_pred_probs_features,
    stratified_folds,
)
from losskit.labels.label_issues import find_label_issues


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_stratified_folds_balance_classes_and_sizes(n_folds):
    y = np.repeat(np.arange(4), [23, 7, 40, 11])
    folds = stratified_folds(y, n_folds, seed=3)
    assert set(np.unique(folds)) == set(range(n_folds))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in range(4):
        per_fold = np.bincount(folds[y == c], minlength=n_folds)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(folds, stratified_folds(y, n_folds, seed=3))
    assert not np.array_equal(folds, stratified_folds(y, n_folds, seed=4))


class Memoriser(nn.Module):
    """Remembers its training rows; predicts class 0 for a row it saw, class 1 otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.empty(0, 3))

    def forward(self, x):
        match = (x[:, None, :] == self.seen[None]).all(dim=2).any(dim=1)
        return torch.stack([match.double() * 50, (~match).double() * 50], dim=1)


def memorise(model, x, y):
    model.seen = torch.as_tensor(x)


def test_torch_path_is_out_of_sample():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    y = rng.integers(0, 2, 90)
    p = cross_val_pred_probs(x, y, model_factory=Memoriser, train_fn=memorise, n_folds=3)
    assert p.shape == (90, 2) and np.all(p[:, 1] > 0.999)  # no row was seen by its model
    seen = cross_val_pred_probs(  # control: a model trained on everything sees every row
        x, y, model_factory=Memoriser, train_fn=lambda m, a, b: memorise(m, x, y), n_folds=3
    )
    assert np.all(seen[:, 0] > 0.999)


class OneNN:
    """A 1-nearest-neighbour classifier with scikit-learn's fit / predict_proba / classes_."""

    def fit(self, x, y):
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.classes_ = np.unique(self.y)
        return self

    def predict_proba(self, x):
        d = ((np.asarray(x)[:, None, :] - self.x[None]) ** 2).sum(axis=2)
        nearest = self.y[d.argmin(axis=1)]
        return (nearest[:, None] == self.classes_[None]).astype(float)


def test_features_path_is_out_of_sample_with_a_one_nn():
    """Random labels on distinct points: a 1-NN that saw a row would return its own label;
    out of fold it is right only at chance, and exactly right in-sample."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = rng.integers(0, 3, 300)
    p = cross_val_pred_probs_features(x, y, head=OneNN, n_folds=5, standardize=False)
    assert abs((p.argmax(1) == y).mean() - 1 / 3) < 0.1
    in_sample = OneNN().fit(x, y).predict_proba(x)  # control: the same model in-sample
    assert (in_sample.argmax(1) == y).all()


def test_missing_class_in_a_training_fold_gets_zero_probability():
    x = np.arange(12, dtype=float)[:, None]
    y = np.array([0] * 5 + [1] * 5 + [2, 2])
    folds = np.array([0] * 6 + [1] * 6)  # class 2 is only in fold 1: its fold-1 model lacks it
    p = cross_val_pred_probs_features(x, y, head=OneNN, folds=folds)
    assert np.all(p[folds == 1][:, 2] == 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_softmax_head_matches_logistic_regression():
    """Both heads minimise mean cross-entropy + l2/2 |W|^2: the same probabilities."""
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 240)
    x = rng.normal(size=(240, 5)) + np.eye(3, 5)[y] * 1.5
    a = cross_val_pred_probs_features(x, y, head="softmax", l2=1e-2, max_iter=500, seed=0)
    b = cross_val_pred_probs_features(x, y, head="logistic_regression", l2=1e-2, max_iter=2000)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_torch_path_trains_a_linear_model_deterministically():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    x = (rng.normal(size=(150, 4)) + np.eye(3, 4)[y] * 2).astype(np.float32)

    def train(model, xs, ys):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(50):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.as_tensor(xs)), torch.as_tensor(ys)).backward()
            opt.step()

    def run():
        return cross_val_pred_probs(x, y, model_factory=lambda: nn.Linear(4, 3), train_fn=train)

    p = run()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p.argmax(1) == y).mean() > 0.8
    np.testing.assert_array_equal(p, run())
    t = cross_val_pred_probs(
        torch.as_tensor(x), y, model_factory=lambda: nn.Linear(4, 3), train_fn=train
    )
    np.testing.assert_array_equal(t, p)


def test_digits_with_flipped_labels_are_found():
    """The reference map's check: 5 % flips, 5-fold cross-validated linear model, precision
    and recall of the flips above 0.7."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.05
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    p = cross_val_pred_probs_features(x, noisy, l2=1e-3, max_iter=100)
    issues = find_label_issues(noisy, p)
    hit = (issues & flip).sum()
    assert hit / issues.sum() > 0.7 and hit / flip.sum() > 0.7


def test_bad_inputs():
    x = np.zeros((10, 2))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="n_folds"):
        stratified_folds(y, 1)
    with pytest.raises(ValueError, match="exceeds"):
        stratified_folds(y, 11)
    with pytest.raises(ValueError, match="must match"):
        cross_val_pred_probs_features(x, y[:5])
    with pytest.raises(ValueError, match="head"):
        cross_val_pred_probs_features(x, y, head="svm")
    with pytest.raises(ValueError, match="finite"):
        cross_val_pred_probs_features(np.full((10, 2), np.nan), y)
    with pytest.raises(ValueError, match="l2"):
        cross_val_pred_probs_features(x, y, l2=0.0)
    with pytest.raises(ValueError, match="integer"):
        cross_val_pred_probs_features(x, y.astype(float))
    with pytest.raises(ValueError, match="class id"):
        cross_val_pred_probs_features(x, y + 1, num_classes=2)
    with pytest.raises(ValueError, match="folds"):
        cross_val_pred_probs_features(x, y, folds=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="logits"):
        cross_val_pred_probs(
            x, y, model_factory=lambda: nn.Linear(2, 3), train_fn=lambda m, a, b: None,
            forward_fn=lambda m, b: m(torch.as_tensor(b, dtype=torch.float32)), num_classes=2,
        )  # fmt: skip
