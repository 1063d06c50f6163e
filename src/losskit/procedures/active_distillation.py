"""Robust active distillation (RAD, paper 5): which unlabelled points to query a teacher on.

A student has a few labelled points and a pool of unlabelled ones; each query of the (costly,
sometimes wrong) teacher returns a soft label. With ``B`` queries per round, RAD picks points
that are informative for the student *and* likely to be labelled correctly, posed as a
zero-sum game:

* the learner picks inclusion probabilities ``pi_i in [0, 1]``, ``sum_i pi_i = B``;
* an adversary picks the teacher's wrong labels, ``c_i in [0, 1]``, ``sum_i c_i <= k``, with
  ``k`` the teacher's expected number of mistakes among the candidates;
* the payoff is the informativeness of the correctly labelled queries,
  ``sum_i pi_i g_i (1 - c_i)``, with the student's gain ``g_i = 1 - (p_(1) - p_(2))`` (one
  minus its margin).

The adversary spoils the ``k`` largest ``q_i = pi_i g_i``; in the dual form of that top-``k``
sum, ``max_pi min_c = max_{t >= 0} [G(t) - k t]``, where ``G(t)`` fills the budget in
decreasing gain order with each ``pi_i`` capped at ``min(1, t / g_i)``. ``G`` is concave, so a
golden-section search over the level ``t`` gives the exact optimum (tested against a linear
program). Properties (tested): for ``B = 1`` the answer is the equaliser ``pi_i ~ 1 / g_i`` on
the ``m`` most informative points, ``m`` maximising ``(m - k) / sum_{i <= m} 1 / g_i``; with
``k = 0`` it is margin sampling; a larger ``k`` spreads the queries over more points and
lowers the most informative point's probability (the adversary's first target). Inside the
support the *less* informative points get the *larger* ``pi_i`` (``pi_i g_i`` is levelled),
and the teacher's per-point confidences enter only through their total ``k``: they are not
trusted point by point. ``B`` distinct points are drawn with exactly these inclusion
probabilities (systematic sampling in a seeded random order), deterministic given ``seed``.
Nothing is tuned ("parameter-free"); ``k`` defaults to ``sum_i (1 - max_c p^T_ic)``, the
teacher's confidence read as its probability of being right.

Inputs: ``student_probs``, ``teacher_probs``: ``[N, C]`` probability rows (tensors or arrays,
any floating dtype; computed in float64). ``exclude``: pool indices already queried.
Selectors return sorted ``int64`` indices; :func:`rad_probabilities` returns the ``pi_i``.

Provenance: no public code exists and only the abstract could be read. The game (a learner's
sampling distribution against an adversary choosing the teacher's mistakes; gains from the
student's margin; the number of mistakes from the teacher's confidence) is reconstructed from
the abstract and recollection of the paper, then solved exactly; the batch version with caps
``pi_i <= 1`` and the sampling scheme are losskit's.

The digits demonstration (RAD vs margin vs random sampling) is
:mod:`losskit.procedures.active_distillation_demo`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_class_target, check_number, check_scores
from losskit._core.registry import register
from losskit.distillation._common import check_temperature
from losskit.distillation.kd import kd_loss

Selector = Callable[..., np.ndarray]
Indices = Sequence[int] | np.ndarray | None
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _probs(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    check_scores(t, name)
    check_class_target(t, t, name=name)
    return t.detach().to(torch.float64).cpu().numpy()


def _budget(budget: int, available: int, name: str = "budget") -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {budget!r}")
    if not 0 <= budget <= available:
        raise ValueError(f"{name} must be in [0, {available}] (unqueried points), got {budget}")
    return int(budget)


def _candidates(n: int, exclude: Indices) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.size and (ex.dtype.kind not in "iu" or ex.min() < 0 or ex.max() >= n):
            raise ValueError(f"exclude must hold pool indices in [0, {n}), got {ex[:5]}")
        keep[ex.astype(np.int64)] = False
    return np.flatnonzero(keep)


def student_gains(student_probs: Tensor | np.ndarray) -> np.ndarray:
    """Informativeness ``g_i = 1 - (p_(1) - p_(2))`` from the student's two top probabilities."""
    p = _probs(student_probs, "student_probs")
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def rad_inclusion(gains: np.ndarray, budget: int, mistakes: float) -> np.ndarray:
    """The learner's minimax inclusion probabilities (each in [0, 1], summing to ``budget``)
    against an adversary that spoils ``mistakes`` points."""
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all() or (g < 0).any():
        raise ValueError(f"gains must be a non-empty 1-D array of finite values >= 0, got {g}")
    b = _budget(budget, g.size)
    k = check_number("mistakes", mistakes, low=0.0)
    order = np.argsort(-g, kind="stable")
    gs = g[order]

    def fill(t: float) -> np.ndarray:
        cap = np.ones_like(gs)
        big = gs > t
        cap[big] = t / gs[big]
        return np.clip(b - (np.cumsum(cap) - cap), 0.0, cap)

    def value(t: float) -> float:
        return float(fill(t) @ gs) - k * t

    lo, hi = 0.0, float(gs[0])
    x1, x2 = hi - _GOLDEN * hi, _GOLDEN * hi
    f1, f2 = value(x1), value(x2)
    for _ in range(100):  # golden-section search of the concave G(t) - k t
        if f1 < f2:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + _GOLDEN * (hi - lo)
            f2 = value(x2)
        else:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - _GOLDEN * (hi - lo)
            f1 = value(x1)
    t = max((0.0, x1, x2, float(gs[0])), key=value)
    if b == 0 or value(t) <= 0.0:  # the adversary can spoil everything: no preference
        pi = np.full_like(gs, b / g.size)
    else:
        pi = fill(t)
        room = 1.0 - pi  # budget left unused (only where the value is flat), by gain order
        pi += np.clip(b - pi.sum() - (np.cumsum(room) - room), 0.0, room)
    out = np.empty_like(pi)
    out[order] = pi
    return out


def _systematic(pi: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """``budget`` distinct sorted indices; index ``i`` is included with probability ``pi_i``."""
    perm = rng.permutation(pi.size)
    cum = np.cumsum(pi[perm])
    cum[-1] = budget
    pos = np.searchsorted(cum, rng.uniform() + np.arange(budget), side="right")
    chosen = np.unique(perm[np.minimum(pos, pi.size - 1)])
    if chosen.size < budget:  # float rounding only: top up by inclusion probability
        rest = np.setdiff1d(np.argsort(-pi, kind="stable"), chosen, assume_unique=True)
        chosen = np.union1d(chosen, rest[: budget - chosen.size])
    return chosen.astype(np.int64)


def rad_probabilities(
    student_probs: Tensor | np.ndarray,
    teacher_probs: Tensor | np.ndarray | None,
    budget: int,
    *,
    mistakes: float | None = None,
    exclude: Indices = None,
) -> np.ndarray:
    """RAD's inclusion probability of every pool point (0 on ``exclude``, summing to
    ``budget``). ``mistakes`` (``k``) defaults to ``sum (1 - max_c p^T_ic)`` over the
    candidates; ``teacher_probs`` may be ``None`` when ``mistakes`` is given."""
    gains = student_gains(student_probs)
    cand = _candidates(gains.size, exclude)
    b = _budget(budget, cand.size)
    if mistakes is None:
        if teacher_probs is None:
            raise ValueError("teacher_probs is required when mistakes is not given")
        conf = _probs(teacher_probs, "teacher_probs").max(axis=1)
        if conf.size != gains.size:
            raise ValueError(f"teacher_probs must have {gains.size} rows, got {conf.size}")
        mistakes = float((1.0 - conf[cand]).sum())
    pi = np.zeros_like(gains)
    pi[cand] = rad_inclusion(gains[cand], b, mistakes)
    return pi


def rad_select(
    student_probs: Tensor | np.ndarray,
    teacher_probs: Tensor | np.ndarray | None,
    budget: int,
    *,
    mistakes: float | None = None,
    exclude: Indices = None,
    seed: int = 0,
) -> np.ndarray:
    """RAD: ``budget`` distinct pool indices drawn with :func:`rad_probabilities`."""
    pi = rad_probabilities(student_probs, teacher_probs, budget, mistakes=mistakes, exclude=exclude)
    return _systematic(pi, int(budget), np.random.default_rng(seed))


def margin_select(
    student_probs: Tensor | np.ndarray,
    teacher_probs: Tensor | np.ndarray | None,
    budget: int,
    *,
    exclude: Indices = None,
    seed: int = 0,
) -> np.ndarray:
    """Margin sampling: the ``budget`` candidates with the smallest student margin (ties in a
    seeded random order). ``teacher_probs`` is not used."""
    gains = student_gains(student_probs)
    cand = _candidates(gains.size, exclude)
    b = _budget(budget, cand.size)
    tie = np.random.default_rng(seed).random(cand.size)
    return np.sort(cand[np.lexsort((tie, -gains[cand]))[:b]])


def random_select(
    student_probs: Tensor | np.ndarray,
    teacher_probs: Tensor | np.ndarray | None,
    budget: int,
    *,
    exclude: Indices = None,
    seed: int = 0,
) -> np.ndarray:
    """``budget`` candidates uniformly without replacement. ``teacher_probs`` is not used."""
    cand = _candidates(_probs(student_probs, "student_probs").shape[0], exclude)
    b = _budget(budget, cand.size)
    return np.sort(np.random.default_rng(seed).choice(cand, size=b, replace=False))


SELECTORS: dict[str, Selector] = {
    "rad": rad_select,
    "margin": margin_select,
    "random": random_select,
}


@dataclass
class ActiveDistillationResult:
    """The final student, the queried pool indices in query order, and one history row per
    round (round 0: the student trained on the labelled set alone)."""

    student: nn.Module
    queried: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


def _tensor(x: Tensor | np.ndarray) -> Tensor:
    return (x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))).detach().float()


def _fit_student(
    factory: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    teacher: Tensor,
    *,
    label: str,
    temperature: float,
    teacher_probs: bool,
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> nn.Module:
    """A fresh seeded student, full-batch Adam: CE on ``y`` over the first ``len(y)`` rows and
    the teacher's labels (KD at ``temperature``, or CE on its argmax) over the rest."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = factory()
    if len(x) == 0:  # nothing labelled or queried yet: the untrained student
        return model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(y)
    for _ in range(epochs):
        out = model(x)
        loss = F.cross_entropy(out[:n], y, reduction="sum")
        if len(teacher) and label == "soft":
            loss = loss + kd_loss(
                out[n:],
                teacher,
                temperature=temperature,
                teacher_probs=teacher_probs,
                reduction="sum",
            )
        elif len(teacher):
            loss = loss + F.cross_entropy(out[n:], teacher.argmax(1), reduction="sum")
        opt.zero_grad()
        (loss / len(x)).backward()
        opt.step()
    return model.eval()


def active_distillation(
    student_factory: Callable[[], nn.Module],
    teacher_predict: Callable[[np.ndarray], Tensor | np.ndarray],
    x_pool: np.ndarray,
    *,
    x_labeled: np.ndarray | None = None,
    y_labeled: np.ndarray | None = None,
    rounds: int = 4,
    budget_per_round: int = 50,
    selector: str | Selector = "rad",
    label: str = "soft",
    temperature: float = 1.0,
    teacher_probs: bool = False,
    teacher_visible: bool = False,
    teacher_error_rate: float | None = None,
    epochs: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    y_pool: np.ndarray | None = None,
    seed: int = 0,
) -> ActiveDistillationResult:
    """Rounds of: select ``budget_per_round`` pool points, query the teacher on them, retrain
    the student from scratch on everything so far, evaluate.

    ``teacher_predict(x)`` returns ``[n, C]`` logits (probabilities with ``teacher_probs``); it
    is called on ``x_labeled`` once (for RAD's ``k``) and on each round's selection only. The
    student (``student_factory()``, seeded) trains on CE with ``y_labeled`` plus the queried
    labels: ``label="soft"`` is KD at ``temperature`` (the paper distils soft labels; its
    temperature is not in the material we could read), ``"hard"`` is CE on the teacher's argmax.
    ``selector``: ``"rad"``, ``"margin"``, ``"random"`` or a callable
    ``(student_probs, teacher_probs, budget, *, exclude, seed[, mistakes])``. By default the
    selector gets ``teacher_probs=None`` and RAD's ``mistakes`` is ``teacher_error_rate`` times
    the candidates, the rate defaulting to the mean ``1 - confidence`` of the teacher on
    ``x_labeled``; ``teacher_visible=True`` instead shows the selector the teacher's
    probabilities on the whole pool (an offline study, not a budgeted run). ``y_pool`` only
    feeds ``teacher_correct`` (fraction of queried points whose teacher argmax is right).
    """
    check_choice("label", label, ("soft", "hard"))
    temperature = check_temperature(temperature)
    select = SELECTORS.get(selector) if isinstance(selector, str) else selector
    if select is None or not callable(select):
        raise ValueError(
            f"selector must be one of {tuple(SELECTORS)} or callable, got {selector!r}"
        )
    for name, v in (("rounds", rounds), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    pool = _tensor(x_pool)
    _budget(budget_per_round, len(pool) // max(rounds, 1), "budget_per_round")
    xl = _tensor(x_labeled) if x_labeled is not None else pool[:0]
    yl = torch.as_tensor(np.asarray([] if y_labeled is None else y_labeled), dtype=torch.long)
    if len(yl) != len(xl):
        raise ValueError(f"y_labeled must have {len(xl)} labels, got {len(yl)}")

    def probs(x: np.ndarray) -> Tensor:
        out = _tensor(teacher_predict(x))
        return out if teacher_probs else torch.softmax(out, dim=1)

    rate = teacher_error_rate
    if rate is None and len(xl):
        rate = 1.0 - float(probs(np.asarray(x_labeled)).max(dim=1).values.mean())
    if rate is not None:
        rate = check_number("teacher_error_rate", rate, low=0.0, high=1.0)
    visible = probs(np.asarray(x_pool)) if teacher_visible else None
    takes_k = "mistakes" in inspect.signature(select).parameters and visible is None
    if takes_k and rate is None:
        raise ValueError(
            "teacher_error_rate is required: the selector needs k and neither "
            "x_labeled nor teacher_visible=True gives an estimate"
        )
    fit = {
        "label": label,
        "temperature": temperature,
        "teacher_probs": teacher_probs,
        "epochs": epochs,
        "lr": check_number("lr", lr, low=0.0, low_open=True),
        "weight_decay": check_number("weight_decay", weight_decay, low=0.0),
    }
    queried, answers = np.zeros(0, dtype=np.int64), []
    history: list[dict[str, Any]] = []
    student = _fit_student(student_factory, xl, yl, pool[:0], seed=seed * 1009, **fit)
    for r in range(rounds + 1):
        row: dict[str, Any] = {"round": r}
        if r > 0:
            with torch.no_grad():
                sp = torch.softmax(student(pool), dim=1)
            kw: dict[str, Any] = {"exclude": queried, "seed": seed * 1009 + r}
            if takes_k:
                kw["mistakes"] = row["mistakes"] = rate * (len(pool) - queried.size)
            sel = np.asarray(select(sp, visible, budget_per_round, **kw), dtype=np.int64)
            if sel.size != budget_per_round or np.intersect1d(sel, queried).size:
                raise ValueError(f"selector returned {sel.size} indices or re-queried points")
            answers.append(_tensor(teacher_predict(np.asarray(x_pool)[sel])))
            queried = np.concatenate([queried, sel])
            x = torch.cat([xl, pool[torch.as_tensor(queried)]])
            student = _fit_student(
                student_factory, x, yl, torch.cat(answers), seed=seed * 1009 + r, **fit
            )
            if y_pool is not None:
                right = torch.cat(answers).argmax(1).numpy() == np.asarray(y_pool)[queried]
                row["teacher_correct"] = float(right.mean())
        row["queried"] = int(queried.size)
        if x_test is not None and y_test is not None:
            with torch.no_grad():
                pred = student(_tensor(x_test)).argmax(1).numpy()
            row["test_accuracy"] = float((pred == np.asarray(y_test)).mean())
        history.append(row)
    return ActiveDistillationResult(student, queried, history)


register(
    "rad_selection",
    kind="procedure",
    family="procedures",
    papers=(5,),
    summary="RAD: minimax sampling of teacher queries, informativeness vs. teacher mistakes.",
    function=rad_select,
)
register(
    "active_distillation",
    kind="procedure",
    family="procedures",
    papers=(5,),
    summary="Active distillation rounds: select, query the teacher, retrain, evaluate.",
    defaults={"selector": "rad", "label": "soft", "temperature": 1.0},
    function=active_distillation,
)
