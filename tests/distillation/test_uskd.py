import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.distillation.uskd import USKDHead, USKDLoss, uskd_loss, uskd_soft_labels
from tests.contract import check_matches_reference
from tests.distillation.contract import (
    check_gradcheck,
    check_half_precision,
    check_reductions,
    random_pair,
)


def fn(s, w, y, **kw):
    """The contract helpers' ``fn(student, teacher, target)`` shape, with the weak logits in
    the teacher's place."""
    return uskd_loss(s, y, weak_logits=w, **kw)


def slow_labels(s, w, y, ranking):
    """Python floats: squared-target labels and Zipf labels from an explicit sort."""
    n, c = s.shape
    ps = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in s.tolist()]
    pw = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in w.tolist()]
    sq = [ps[i][int(y[i])] ** 2 for i in range(n)]
    p_y = [v + 1 - sum(sq) / n for v in sq]
    z = []
    for i in range(n):
        k = int(y[i])
        if ranking == "paper":
            score = {
                j: ps[i][j] / (1 - ps[i][k]) + pw[i][j] / (1 - pw[i][k]) for j in range(c) if j != k
            }
        else:
            log_s = [math.log(v) for v in ps[i]]
            score = {
                j: pw[i][j] / (1 - pw[i][k] + 1e-6) + log_s[j] / (1 - log_s[k] + 1e-6)
                for j in range(c)
            }
        ordered = sorted(score, key=lambda j: -score[j])
        raw = [0.0 if j == k else 1.0 / (ordered.index(j) + 1) for j in range(c)]
        z.append([v / sum(raw) for v in raw])
    return torch.tensor(p_y, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)


def slow_uskd(s, w, y, alpha, beta, mu, ranking):
    """Loop reference in torch scalars (autograd gives the gradient); labels are constants."""
    p_y, z = slow_labels(s.detach(), w.detach(), y, ranking)
    c = s.shape[1]
    out = []
    for i in range(s.shape[0]):
        k = int(y[i])
        p = torch.softmax(s[i], 0)
        lt = -p_y[i] * torch.log(p[k])
        ln = -sum(z[i, j] * torch.log(p[j] / (1 - p[k])) for j in range(c) if j != k)
        q = torch.softmax(w[i], 0)
        lw = -sum((0.9 * (j == k) + 0.1 / c) * torch.log(q[j]) for j in range(c))
        out.append(alpha * lt + beta * ln + mu * lw)
    return torch.stack(out)


@pytest.mark.parametrize("ranking", ["paper", "code"])
def test_matches_slow_reference_value_and_gradient(ranking):
    s, w, y = random_pair(7, 6, seed=1)
    kw = {"alpha": 0.7, "beta": 0.4, "mu": 0.3, "ranking": ranking}
    check_matches_reference(
        lambda a, b: uskd_loss(a, y, weak_logits=b, reduction="none", **kw),
        lambda a, b: slow_uskd(a, b, y, kw["alpha"], kw["beta"], kw["mu"], ranking),
        s,
        w,
    )


@pytest.mark.parametrize("ranking", ["paper", "code"])
def test_soft_labels_match_loop(ranking):
    s, w, y = random_pair(8, 7, seed=2)
    p_y, z = uskd_soft_labels(s, y, weak_logits=w, ranking=ranking)
    want_p, want_z = slow_labels(s, w, y, ranking)
    torch.testing.assert_close(p_y, want_p)
    torch.testing.assert_close(z, want_z)


def test_squared_target_label_properties():
    s, _, y = random_pair(9, 5, seed=3)
    p_y, _ = uskd_soft_labels(s, y)
    s_y = torch.softmax(s, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(p_y.mean(), torch.tensor(1.0, dtype=torch.float64))
    # ordered like the student's own target probability
    assert torch.equal(torch.argsort(p_y), torch.argsort(s_y))
    # the batch mean leaves out ignored samples
    y2 = y.clone()
    y2[0] = -100
    p2, _ = uskd_soft_labels(s, y2)
    torch.testing.assert_close(p2[1:].mean(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("ranking", ["paper", "code"])
def test_zipf_labels_sum_to_one_and_fall_with_rank(ranking):
    s, w, y = random_pair(10, 8, seed=4)
    _, z = uskd_soft_labels(s, y, weak_logits=w, ranking=ranking)
    torch.testing.assert_close(z.sum(1), torch.ones(10, dtype=torch.float64))
    assert (z.gather(1, y[:, None]) == 0).all()
    for i in range(10):
        vals = sorted((v for j, v in enumerate(z[i].tolist()) if j != y[i]), reverse=True)
        assert all(a > b for a, b in zip(vals, vals[1:], strict=False))
        if ranking == "paper":  # ranks 1..C-1 among the non-targets: z_r / z_1 = 1 / r
            for r, v in enumerate(vals, start=1):
                assert math.isclose(v / vals[0], 1 / r, rel_tol=1e-12)


def test_paper_ranking_follows_summed_normalised_probabilities():
    s, w, y = random_pair(6, 5, seed=5)
    _, z = uskd_soft_labels(s, y, weak_logits=w)
    score = F.softmax(s, 1) / (1 - F.softmax(s, 1).gather(1, y[:, None]))
    score = score + F.softmax(w, 1) / (1 - F.softmax(w, 1).gather(1, y[:, None]))
    for i in range(6):
        others = [j for j in range(5) if j != y[i]]
        by_score = sorted(others, key=lambda j: -float(score[i, j]))
        by_label = sorted(others, key=lambda j: -float(z[i, j]))
        assert by_score == by_label


def test_code_ranking_differs_from_paper():
    # the weak head prefers class 1, the student prefers class 2: the sum of the normalised
    # probabilities (1.10 against 0.90) follows the weak head, while the code's log-probability
    # term (a gap of about 1.9 against the weak head's 0.96) follows the student
    s = torch.tensor([[5.0, 0.0, 2.0, -3.0]], dtype=torch.float64)
    w = torch.tensor([[5.0, 4.0, 0.0, -3.0]], dtype=torch.float64)
    y = torch.tensor([0])
    _, zp = uskd_soft_labels(s, y, weak_logits=w, ranking="paper")
    _, zc = uskd_soft_labels(s, y, weak_logits=w, ranking="code")
    assert zp[0, 1] > zp[0, 2]
    assert zc[0, 2] > zc[0, 1]


def test_terms_separately():
    s, w, y = random_pair(seed=6)
    weak = uskd_loss(s, y, weak_logits=w, alpha=0.0, beta=0.0, mu=0.5, reduction="none")
    ce = F.cross_entropy(w, y, reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(weak, 0.5 * ce)
    p_y, _ = uskd_soft_labels(s, y)
    target = uskd_loss(s, y, alpha=1.0, beta=0.0, reduction="none")
    torch.testing.assert_close(target, -p_y * torch.log_softmax(s, 1).gather(1, y[:, None])[:, 0])
    # no weak head: no weak term, and the ranking follows the student's non-target logits
    _, z = uskd_soft_labels(s, y)
    for i in range(6):
        others = [j for j in range(5) if j != y[i]]
        by_logit = sorted(others, key=lambda j: -float(s[i, j]))
        assert by_logit == sorted(others, key=lambda j: -float(z[i, j]))


def test_ignore_index():
    s, w, y = random_pair(seed=7)
    y[3] = -100
    out = fn(s, w, y, reduction="none")
    assert out[3] == 0
    torch.testing.assert_close(fn(s, w, y), out[[0, 1, 2, 4, 5]].mean())
    y[:] = -100
    sg = s.clone().requires_grad_(True)
    fn(sg, w, y, reduction="sum").backward()
    assert torch.isfinite(sg.grad).all()


def test_module_with_head():
    torch.manual_seed(0)
    s, _, y = random_pair(seed=8)
    feats = torch.randn(6, 4, dtype=torch.float64)
    m = USKDLoss(4, 5, alpha=0.1, beta=0.1, mu=0.1).double()
    assert isinstance(m.head, USKDHead)
    out = m(s, y, features=feats)
    torch.testing.assert_close(
        out, uskd_loss(s, y, weak_logits=m.head(feats), alpha=0.1, beta=0.1, mu=0.1)
    )
    out.backward()
    assert m.head.weight.grad is not None and torch.isfinite(m.head.weight.grad).all()
    bare = USKDLoss(ranking="code")
    torch.testing.assert_close(
        bare(s, y, weak_logits=feats[:, :1].expand(6, 5) + s),
        uskd_loss(s, y, weak_logits=feats[:, :1].expand(6, 5) + s, ranking="code"),
    )
    with pytest.raises(ValueError, match="features"):
        m(s, y, features=torch.randn(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="not both"):
        m(s, y, features=feats, weak_logits=s)
    with pytest.raises(ValueError, match="head"):
        bare(s, y, features=feats)
    with pytest.raises(ValueError, match="features"):
        m(s, y, features=torch.full_like(feats, float("nan")))


def test_registry_defaults():
    e = get("uskd")
    assert e.papers == (44,)
    m = e.build()
    assert (m.alpha, m.beta, m.mu, m.ranking, m.head) == (1.0, 0.1, 0.005, "paper", None)


def test_contract():
    # The soft labels are constants for the gradient (stop-gradient, as in the paper), but
    # p_y moves continuously with the student, so finite differences of the target term do
    # not match its gradient by design: gradcheck runs with alpha=0 (the Zipf labels are
    # piecewise constant) and the target term's gradient is checked against the loop above.
    s, w, y = random_pair()
    for ranking in ("paper", "code"):
        check_reductions(fn, s, w, y, ranking=ranking)
        check_gradcheck(fn, s, w, y, ranking=ranking, alpha=0.0, beta=1.0, mu=0.5)
        check_half_precision(fn, y, ranking=ranking)
        wg = w.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda v, r=ranking: fn(s, v, y, reduction="sum", mu=0.5, ranking=r), (wg,)
        )


def test_bad_inputs():
    s, w, y = random_pair(4, 5, dtype=torch.float32)
    cases = [
        ((s[0], y), {}, "student"),
        ((s, y[:3]), {}, "target"),
        ((s, torch.tensor([0, 1, 5, 0])), {}, "target"),
        ((s, y.float()), {}, "target"),
        ((torch.full_like(s, float("nan")), y), {}, "student"),
        ((s[:0], y[:0]), {}, "student"),
        ((s, y), {"weak_logits": w[:, :-1]}, "weak_logits"),
        ((s, y), {"weak_logits": torch.full_like(w, float("inf"))}, "weak_logits"),
        ((s, y), {"reduction": "avg"}, "reduction"),
        ((s, y), {"ranking": "sum"}, "ranking"),
        ((s, y), {"alpha": -1.0}, "alpha"),
        ((s, y), {"beta": float("nan")}, "beta"),
        ((s, y), {"mu": -0.1}, "mu"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            uskd_loss(*args, **kw)
    for kw, name in [
        ({"alpha": -1.0}, "alpha"),
        ({"mu": float("nan")}, "mu"),
        ({"ranking": "x"}, "ranking"),
        ({"reduction": "avg"}, "reduction"),
        ({"in_features": 4}, "num_classes"),
        ({"in_features": 0, "num_classes": 5}, "in_features"),
        ({"in_features": 4, "num_classes": 1}, "num_classes"),
    ]:
        with pytest.raises(ValueError, match=name):
            USKDLoss(**kw)
