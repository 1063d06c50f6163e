"""The two tasks of the Loki demonstration (paper 47): TREC-50 with its coarse -> fine hierarchy
and CIFAR-10, each with some classes held out of training.

Per seed, :func:`trec_split` / :func:`cifar_split` choose the held-out classes, a
logistic-regression probe is fitted on the observed classes only (:func:`fit_probe`), and its
probabilities over the observed classes are returned for the evaluation sets; the label
metrics come from :func:`trec_metrics` and :func:`cifar_metrics`.

Class-name metrics embed a short description of every class with all-MiniLM-L6-v2
(:mod:`losskit.arena.embeddings`, cached). TREC's descriptions paraphrase the question-class
definitions of Li & Roth (2002) and are prefixed by the coarse class ("location: cities"); the
CIFAR-10 classes are embedded by their names.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from losskit.diagnostics.label_metrics import discrete_metric, embedding_metric, tree_metric

TREC_COARSE = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "numeric value",
}
TREC_FINE = {
    "ABBR:abb": "abbreviation",
    "ABBR:exp": "expansion of an abbreviation",
    "DESC:def": "definition of something",
    "DESC:desc": "description of something",
    "DESC:manner": "manner of an action",
    "DESC:reason": "reasons",
    "ENTY:animal": "animals",
    "ENTY:body": "organs of the body",
    "ENTY:color": "colors",
    "ENTY:cremat": "inventions, books and other creative works",
    "ENTY:currency": "currency names",
    "ENTY:dismed": "diseases and medicine",
    "ENTY:event": "events",
    "ENTY:food": "food",
    "ENTY:instru": "musical instruments",
    "ENTY:lang": "languages",
    "ENTY:letter": "letters like a-z",
    "ENTY:other": "other entities",
    "ENTY:plant": "plants",
    "ENTY:product": "products",
    "ENTY:religion": "religions",
    "ENTY:sport": "sports",
    "ENTY:substance": "elements and substances",
    "ENTY:symbol": "symbols and signs",
    "ENTY:techmeth": "techniques and methods",
    "ENTY:termeq": "equivalent terms",
    "ENTY:veh": "vehicles",
    "ENTY:word": "words with a special property",
    "HUM:desc": "description of a person",
    "HUM:gr": "a group or organization of persons",
    "HUM:ind": "an individual person",
    "HUM:title": "title of a person",
    "LOC:city": "cities",
    "LOC:country": "countries",
    "LOC:mount": "mountains",
    "LOC:other": "other locations",
    "LOC:state": "states",
    "NUM:code": "postcodes and other codes",
    "NUM:count": "number of something",
    "NUM:date": "dates",
    "NUM:dist": "distances and linear measures",
    "NUM:money": "prices",
    "NUM:ord": "ranks",
    "NUM:other": "other numbers",
    "NUM:perc": "fractions and percentages",
    "NUM:period": "the lasting time of something",
    "NUM:speed": "speed",
    "NUM:temp": "temperature",
    "NUM:volsize": "size, area and volume",
    "NUM:weight": "weight",
}
TREC_COMPONENTS = (2, 4, 8, 16)  # principal components of the reduced name metrics
CIFAR_COMPONENTS = (2, 4, 8)
CIFAR_HELD_OUT = 3
CIFAR_PCA = 128  # whitened principal components of the pooled pixels


def _name_metrics(texts: list[str], key: str, components: tuple[int, ...]) -> dict:
    from losskit.arena.embeddings import embed_texts

    emb = embed_texts(texts, key=key, progress=False)
    out = {"names": embedding_metric(emb)}
    out.update({f"names, {r} PCs": embedding_metric(emb, components=r) for r in components})
    return out


def trec_metrics(class_names: list[str]) -> dict[str, np.ndarray]:
    """Label metrics over the 50 fine TREC classes: discrete, the hierarchy root -> coarse
    -> fine (siblings at distance 2, cousins at 4), and the class-description embeddings
    (full and on their top principal components)."""
    missing = [n for n in class_names if n not in TREC_FINE]
    if missing:
        raise ValueError(f"TREC fine classes without a description: {missing}")
    parent: dict[str, str | None] = {"root": None, **dict.fromkeys(TREC_COARSE, "root")}
    parent.update({n: n.split(":")[0] for n in class_names})
    texts = [f"{TREC_COARSE[n.split(':')[0]]}: {TREC_FINE[n]}" for n in class_names]
    return {
        "discrete": discrete_metric(len(class_names)),
        "tree": tree_metric(parent, class_names),
        **_name_metrics(texts, "loki-trec50-classes", TREC_COMPONENTS),
    }


def cifar_metrics(class_names: list[str]) -> dict[str, np.ndarray]:
    """Discrete and class-name embedding metrics over the 10 CIFAR-10 classes."""
    return {
        "discrete": discrete_metric(len(class_names)),
        **_name_metrics(list(class_names), "loki-cifar10-classes", CIFAR_COMPONENTS),
    }


def trec_split(class_names: list[str], seed: int) -> np.ndarray:
    """Held-out fine classes: ``floor(n_c / 2)`` of the ``n_c`` fine classes of every coarse
    class ``c``, drawn with ``seed`` (every coarse class keeps at least one)."""
    rng = np.random.default_rng(seed)
    coarse = np.array([n.split(":")[0] for n in class_names])
    held = [
        rng.choice(np.flatnonzero(coarse == c), (coarse == c).sum() // 2, replace=False)
        for c in sorted(set(coarse))
    ]
    return np.sort(np.concatenate(held))


def cifar_split(seed: int, num_classes: int = 10) -> np.ndarray:
    """``CIFAR_HELD_OUT`` held-out classes drawn with ``seed``."""
    return np.sort(np.random.default_rng(seed).choice(num_classes, CIFAR_HELD_OUT, replace=False))


def fit_probe(x: np.ndarray, y: np.ndarray, observed: np.ndarray, max_iter: int) -> Any:
    """Multinomial logistic regression (scikit-learn, L2 with C = 1, L-BFGS, at most
    ``max_iter`` iterations, no convergence warning) on the examples of the sorted
    ``observed`` classes; ``predict_proba`` columns follow ``observed``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    keep = np.isin(y, observed)
    target = np.searchsorted(observed, y[keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=1.0, max_iter=max_iter).fit(x[keep], target)


def pooled_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 32, 32, 3]`` -> float64 ``[N, 768]``: 2x2 average-pooled pixels in [0, 1]."""
    x = images.reshape(len(images), 16, 2, 16, 2, 3).mean(axis=(2, 4), dtype=np.float64)
    return x.reshape(len(images), -1) / 255.0


def whiten(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Project on the top ``CIFAR_PCA`` principal components of ``train`` with unit variance
    (fitted on ``train`` only) and apply the same map to ``others``."""
    mean = train.mean(axis=0)
    _, s, vt = np.linalg.svd(train - mean, full_matrices=False)
    r = min(CIFAR_PCA, len(s))
    w = vt[:r].T / (s[:r] / np.sqrt(len(train)))
    return [(a - mean) @ w for a in (train, *others)]


def stratified_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of every class (all of a smaller class), sorted."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(parts))
