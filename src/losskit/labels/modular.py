"""Corrupted modular-arithmetic datasets (paper 55, Doshi, Das, He, Gromov, "To grok or not
to grok: Disentangling generalization and memorization on corrupted algorithmic datasets").

The dataset holds every pair ``(a, b)`` of ``Z_p x Z_p`` once, in the canonical order
``index = a * p + b``, with the label ``y = (a + b) mod p`` (``operation="addition"``, the
paper's task) or ``y = (a * b) mod p`` (``"multiplication"``, its Appendix P). A random
``floor(alpha * p^2)`` of the pairs form the training set (``alpha`` the data fraction), the
rest the test set, whose labels stay true.

Label corruption (the paper's Section 1.1): a random ``floor(xi * n_train)`` of the training
examples get a label drawn uniformly from all ``p`` classes (symmetric noise, as the paper's
code draws it). A redrawn label equals the true one with probability ``1/p``, so the
expected fraction of training labels that are actually wrong is ``xi (1 - 1/p)`` (exactly so
when ``xi * n_train`` is an integer). ``corrupted`` lists the redrawn examples;
:attr:`ModularDataset.wrong` marks those whose label differs from the truth.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

OPERATIONS = ("addition", "multiplication")


@dataclass(frozen=True)
class ModularDataset:
    """A corrupted modular-arithmetic dataset over ``Z_p``.

    ``a``, ``b``, ``labels`` (true labels) have ``p^2`` entries in the order
    ``a * p + b``; ``train`` and ``test`` are pair indices (disjoint, together all pairs);
    ``train_labels[i]`` is the (possibly corrupted) label of pair ``train[i]``;
    ``corrupted`` are positions in ``train`` (sorted) whose labels were redrawn.
    """

    p: int
    operation: str
    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    corrupted: np.ndarray
    train_fraction: float
    corruption: float

    @property
    def wrong(self) -> np.ndarray:
        """Mask over the training set: the label differs from the true one."""
        return self.train_labels != self.labels[self.train]

    @property
    def test_labels(self) -> np.ndarray:
        return self.labels[self.test]


def _check_p(p: int) -> int:
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 2:
        raise ValueError(f"p must be an int >= 2, got {p!r}")
    return int(p)


def modular_labels(a: np.ndarray, b: np.ndarray, p: int, operation: str = "addition") -> np.ndarray:
    """``(a + b) mod p`` or ``(a * b) mod p`` as int64."""
    p = _check_p(p)
    check_choice("operation", operation, OPERATIONS)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return (a + b) % p if operation == "addition" else (a * b) % p


def modular_dataset(
    p: int,
    *,
    operation: str = "addition",
    train_fraction: float = 0.5,
    corruption: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> ModularDataset:
    """All ``p^2`` pairs, a random training split of ``floor(train_fraction * p^2)`` pairs
    and ``floor(corruption * n_train)`` training labels redrawn uniformly from ``Z_p``.

    ``train_fraction`` in ``(0, 1]`` (the training set must not be empty), ``corruption`` in
    ``[0, 1]``; ``seed`` fixes the split, the corrupted examples and their labels.
    """
    p = _check_p(p)
    check_choice("operation", operation, OPERATIONS)
    alpha = check_number("train_fraction", train_fraction, low=0.0, high=1.0, low_open=True)
    xi = check_number("corruption", corruption, low=0.0, high=1.0)
    n_train = int(alpha * p * p)
    if n_train < 1:
        raise ValueError(
            f"train_fraction={alpha} leaves no training pair out of p^2 = {p * p}; raise it"
        )
    rng = np.random.default_rng(seed)
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    labels = modular_labels(a, b, p, operation)
    order = rng.permutation(p * p)
    train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
    corrupted = np.sort(rng.choice(n_train, size=int(xi * n_train), replace=False))
    train_labels = labels[train].copy()
    train_labels[corrupted] = rng.integers(0, p, size=corrupted.size)
    return ModularDataset(
        p=p,
        operation=operation,
        a=a,
        b=b,
        labels=labels,
        train=train,
        test=test,
        train_labels=train_labels,
        corrupted=corrupted,
        train_fraction=alpha,
        corruption=xi,
    )


register(
    "modular_corruption",
    kind="scenario",
    family="synthetic",
    papers=(55,),
    summary="All (a, b) in Z_p x Z_p labelled (a + b) or (a * b) mod p, a random training "
    "split, a fraction xi of training labels redrawn uniformly (xi (1 - 1/p) wrong).",
    defaults={"operation": "addition", "train_fraction": 0.5, "corruption": 0.0},
    function=modular_dataset,
)
