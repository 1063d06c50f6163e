"""Membership-inference score for unlearning (paper 10's privacy check).

The attack is a logistic regression on the model's outputs, told which rows are members
(training data, here the data to forget) and which are non-members (held-out data from the
same distribution). Its features are label-free: the log-softmax of each row sorted in
decreasing order (the reference code's attack sorts softmax outputs the same way, so the
attack cannot key on which class was predicted), standardised. The score is its
cross-validated accuracy:

- the larger set is subsampled to the size ``n`` of the smaller (balanced, chance = 0.5);
- ``folds``-fold stratified cross-validation; every row is predicted once by a model that
  did not see it (features standardised with the training folds' mean and std; L2-penalised
  logistic regression with ``C = 1``, :func:`fit_logistic`); the accuracy over the ``2 n``
  rows is averaged over ``repeats`` subsamples and fold assignments.

A score near 0.5 means the outputs on the members look like those on unseen data (forgotten,
or never memorised); near 1, the members are recognised. The reference code trains an
XGBoost attacker on (remaining-train vs test) outputs and applies it to the forget set; this
cross-validated attack is trained on the very two sets it judges, with no shadow split.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def attack_features(logits: np.ndarray | Tensor) -> np.ndarray:
    """Sorted (decreasing) log-softmax of ``logits[N, C]``, float64."""
    z = np.asarray(logits.detach().cpu() if isinstance(logits, Tensor) else logits, np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape [N, C] with N >= 1, C >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite, got NaN or Inf values")
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.sort(-log_p, axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, C: float = 1.0) -> tuple[np.ndarray, float]:
    """Weights and bias minimising ``||w||^2 / 2 + C sum_i log(1 + exp(-s_i (x_i w + b)))``,
    ``s_i = 2 y_i - 1`` (scikit-learn's ``LogisticRegression(C)``; the bias is not
    penalised), by Newton's method with step halving; float64."""
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    s = 2.0 * np.asarray(y, np.float64) - 1.0
    reg = np.r_[np.ones(d), 0.0]
    theta = np.zeros(d + 1)

    def objective(t: np.ndarray) -> float:
        return 0.5 * float(reg @ t**2) + C * float(np.logaddexp(0.0, -s * (a @ t)).sum())

    f = objective(theta)
    for _ in range(100):
        margin = s * (a @ theta)
        p = 0.5 * (1.0 + np.tanh(-0.5 * margin))  # sigmoid(-margin), stable
        grad = reg * theta - C * a.T @ (s * p)
        hess = np.diag(reg) + C * (a.T * (p * (1 - p))) @ a + 1e-12 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while objective(theta - t * step) > f and t > 1e-10:
            t *= 0.5
        theta = theta - t * step
        f_new = objective(theta)
        if f - f_new <= 1e-12 * max(1.0, abs(f)):
            break
        f = f_new
    return theta[:d], float(theta[d])


def _stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold id per row: every class is shuffled and dealt round-robin to the folds."""
    fold = np.empty(len(y), int)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def membership_inference_score(
    member_logits: np.ndarray | Tensor,
    nonmember_logits: np.ndarray | Tensor,
    *,
    folds: int = 5,
    repeats: int = 5,
    seed: int = 0,
) -> float:
    """Cross-validated accuracy of a logistic-regression attack telling members from
    non-members by their sorted log-probabilities (see the module docstring)."""
    a, b = attack_features(member_logits), attack_features(nonmember_logits)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"member_logits and nonmember_logits must have the same classes, got "
            f"{a.shape[1]} and {b.shape[1]}"
        )
    for name, v, low in (("folds", folds, 2), ("repeats", repeats, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    n = min(len(a), len(b))
    if n < folds:
        raise ValueError(f"each set needs at least folds={folds} rows, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = []
    for _ in range(repeats):
        x = np.vstack([a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]])
        fold = _stratified_folds(y, folds, rng)
        correct = 0
        for k in range(folds):
            train, test = fold != k, fold == k
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            std = np.where(std > 1e-12, std, 1.0)
            w, bias = fit_logistic((x[train] - mean) / std, y[train])
            pred = ((x[test] - mean) / std) @ w + bias > 0
            correct += int((pred == (y[test] == 1)).sum())
        scores.append(correct / (2 * n))
    return float(np.mean(scores))
