import math

import pytest
import torch

from losskit._core.registry import get
from losskit.distillation.landmark import LandmarkKDLoss, _assist_map, landmark_kd_loss

A_TOU, A_NEG_TOU, A_TOL, A_NEG_TOL = 1.9, -0.45, 1.8, -0.4


def coords(n=4, k=5, *, seed=0, dtype=torch.float64):
    """Ground truth, students and teachers as [N, K, 2] landmark coordinates."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, k, 2, generator=g, dtype=torch.float64)
    pr = gt + 0.1 * torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    tol = gt + 0.08 * torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    tou = gt + 0.05 * torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    return tuple(x.to(dtype) for x in (pr, tol, tou, gt))


def geometric_weight(r, d, a_pos, a_neg, band=0.15):
    """The assistive weight told by where the student sits on its own side of the ground
    truth: r = |student - gt|, d = |teacher - gt| (the reflected teacher is at d)."""
    if r == 0:
        return 0.0  # the student is at the ground truth: |x'_T - x_pr| = 0 anyway
    if d > 0 and r > d:
        return a_pos  # beyond the teacher
    if band * d <= r <= d:
        return a_neg  # between the band point and the teacher
    return 0.0


def slow_kd(pr, tol, tou, gt, main_w=2.0, tou_w=1.0, tol_w=1.0):
    """Per-sample KD-Loss and its gradient, one coordinate at a time, from the geometry."""
    n = pr.shape[0]
    p, t_l, t_u, g = (x.reshape(n, -1).tolist() for x in (pr, tol, tou, gt))
    values, grads = [], []
    for i in range(n):
        m = len(p[i])
        total, grad = 0.0, []
        for x, xl, xu, y in zip(p[i], t_l[i], t_u[i], g[i], strict=True):
            e, r = x - y, abs(x - y)
            s = math.copysign(1.0, e) if e != 0 else 0.0
            d_l, d_u = abs(xl - y), abs(xu - y)
            main = 3 * r if r <= d_l else r * r + 3 * d_l - d_l * d_l
            dmain = 3 * s if r <= d_l else 2 * e
            w_u = geometric_weight(r, d_u, A_TOU, A_NEG_TOU)
            w_l = geometric_weight(r, d_l, A_TOL, A_NEG_TOL)
            total += main_w * main + tou_w * w_u * abs(r - d_u) + tol_w * w_l * abs(r - d_l)
            sg = lambda v: (v > 0) - (v < 0)  # noqa: E731
            grad.append(
                (main_w * dmain + tou_w * w_u * sg(r - d_u) * s + tol_w * w_l * sg(r - d_l) * s) / m
            )
        values.append(total / m)
        grads.append(grad)
    return torch.tensor(values, dtype=torch.float64), torch.tensor(grads, dtype=torch.float64)


@pytest.mark.parametrize("weights", [(2.0, 1.0, 1.0), (1.0, 0.5, 3.0)])
def test_matches_slow_reference_value_and_gradient(weights):
    pr, tol, tou, gt = coords(6, 7)
    main_w, tou_w, tol_w = weights
    sg = pr.clone().requires_grad_(True)
    out = landmark_kd_loss(
        sg, tol, tou, gt, main_weight=main_w, tough_weight=tou_w, tol_weight=tol_w,
        reduction="none",
    )  # fmt: skip
    ref, ref_grad = slow_kd(pr, tol, tou, gt, main_w, tou_w, tol_w)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    torch.testing.assert_close(sg.grad.reshape(6, -1), ref_grad)


def test_flat_layout_equals_point_layout():
    pr, tol, tou, gt = coords()
    flat = [x.reshape(x.shape[0], -1) for x in (pr, tol, tou, gt)]
    torch.testing.assert_close(
        landmark_kd_loss(*flat, reduction="none"),
        landmark_kd_loss(pr, tol, tou, gt, reduction="none"),
    )


def test_zero_at_ground_truth_and_mirror_invariance():
    _, tol, tou, gt = coords()
    assert landmark_kd_loss(gt.clone(), tol, tou, gt, reduction="sum") == 0
    pr, *_ = coords(seed=1)
    base = landmark_kd_loss(pr, tol, tou, gt, reduction="none")
    mirrored_student = landmark_kd_loss(2 * gt - pr, tol, tou, gt, reduction="none")
    mirrored_teachers = landmark_kd_loss(pr, 2 * gt - tol, 2 * gt - tou, gt, reduction="none")
    torch.testing.assert_close(mirrored_student, base)
    torch.testing.assert_close(mirrored_teachers, base)


def test_main_loss_is_continuous_at_the_tolerant_error():
    gt = torch.zeros(1, 1, dtype=torch.float64)
    tol = torch.full_like(gt, 0.3)
    only_main = {"tough_weight": 0.0, "tol_weight": 0.0, "main_weight": 1.0}
    below = landmark_kd_loss(gt + 0.3 * (1 - 1e-12), tol, tol, gt, **only_main)
    above = landmark_kd_loss(gt + 0.3 * (1 + 1e-12), tol, tol, gt, **only_main)
    assert abs(below.item() - above.item()) < 1e-10
    assert abs(below.item() - 3 * 0.3) < 1e-10
    # slope 3 below the tolerant error, the quadratic above it
    far = landmark_kd_loss(gt + 0.5, tol, tol, gt, **only_main)
    assert abs(far.item() - (0.25 + 0.9 - 0.09)) < 1e-12


@pytest.mark.parametrize(
    ("r", "expected"),
    [(2.0, A_TOU * 1.0), (0.5, A_NEG_TOU * 0.5), (0.1, 0.0), (-2.0, A_TOU * 1.0)],
)
def test_assistive_regions(r, expected):
    """Teacher at distance 1 from the ground truth (on the other side: it is reflected)."""
    gt = torch.zeros(1, 1, dtype=torch.float64)
    tough = torch.full_like(gt, -1.0)
    out = landmark_kd_loss(gt + r, tough, tough, gt, main_weight=0.0, tol_weight=0.0)
    assert abs(out.item() - expected) < 1e-12


def test_negative_weight_pushes_student_past_the_teacher_to_the_ground_truth():
    gt = torch.zeros(1, 1, dtype=torch.float64)
    tough = torch.ones_like(gt)
    pr = torch.full_like(gt, 0.5).requires_grad_(True)
    landmark_kd_loss(pr, tough, tough, gt, main_weight=0.0, tol_weight=0.0).backward()
    assert pr.grad.item() > 0  # gradient descent moves the prediction towards 0
    beyond = torch.full_like(gt, 1.5).requires_grad_(True)
    landmark_kd_loss(beyond, tough, tough, gt, main_weight=0.0, tol_weight=0.0).backward()
    assert beyond.grad.item() > 0  # beyond the teacher it is pulled back towards it


def test_weight_map_values():
    pr, tol, _, gt = coords(8, 10, seed=3)
    pr = torch.cat([pr, gt[:1]])  # include students exactly at the ground truth
    tol, gt = torch.cat([tol, tol[:1]]), torch.cat([gt, gt[:1]])
    _, w = _assist_map(pr, gt, tol, A_TOL, A_NEG_TOL, 0.15)
    allowed = torch.tensor([A_TOL, A_NEG_TOL, 0.0, A_TOL + A_NEG_TOL], dtype=torch.float64)
    assert torch.isclose(w.reshape(-1, 1), allowed).any(dim=1).all()
    assert {A_TOL, A_NEG_TOL, 0.0} <= set(w.reshape(-1).tolist())


def test_teachers_and_target_get_no_gradient():
    pr, tol, tou, gt = (x.clone().requires_grad_(True) for x in coords())
    landmark_kd_loss(pr, tol, tou, gt).backward()
    assert pr.grad is not None and tol.grad is None and tou.grad is None and gt.grad is None


def test_reductions_module_and_registry():
    pr, tol, tou, gt = coords()
    none = landmark_kd_loss(pr, tol, tou, gt, reduction="none")
    assert none.shape == (4,)
    torch.testing.assert_close(landmark_kd_loss(pr, tol, tou, gt, reduction="sum"), none.sum())
    torch.testing.assert_close(landmark_kd_loss(pr, tol, tou, gt), none.mean())
    # the released code's reduce_mean over every coordinate of the batch
    whole = [x.reshape(1, -1) for x in (pr, tol, tou, gt)]
    torch.testing.assert_close(landmark_kd_loss(*whole), none.mean())
    torch.testing.assert_close(LandmarkKDLoss()(pr, tol, tou, gt), none.mean())
    entry = get("landmark_kd")
    assert entry.papers == (29,) and entry.defaults["alpha_tough"] == 1.9
    torch.testing.assert_close(entry.build()(pr, tol, tou, gt), none.mean())


def test_gradcheck():
    pr, tol, tou, gt = coords(2, 3, seed=5)
    sg = pr.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: landmark_kd_loss(z, tol, tou, gt, reduction="sum"), (sg,)
    )


def test_half_precision():
    pr, tol, tou, gt = coords(6, 10, seed=2, dtype=torch.float32)
    ref = landmark_kd_loss(pr, tol, tou, gt, reduction="none")
    for dtype in (torch.bfloat16, torch.float16):
        low = [x.to(dtype) for x in (pr, tol, tou, gt)]
        low[0].requires_grad_(True)
        out = landmark_kd_loss(*low, reduction="none")
        assert out.dtype == dtype and torch.isfinite(out).all()
        up = landmark_kd_loss(*(x.detach().float() for x in low), reduction="none")
        torch.testing.assert_close(out.float(), up.to(dtype).float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(up, ref, rtol=0.2, atol=0.05)  # only input rounding
        out.sum().backward()
        assert torch.isfinite(low[0].grad).all()


def test_bad_inputs():
    pr, tol, tou, gt = coords(dtype=torch.float32)
    cases = [
        ((pr[0, 0, 0], tol, tou, gt), {}, "student"),
        ((pr[:0], tol[:0], tou[:0], gt[:0]), {}, "student"),
        ((pr.long(), tol, tou, gt), {}, "student"),
        ((pr, tol[:, :-1], tou, gt), {}, "tolerant"),
        ((pr, tol, tou.reshape(4, -1), gt), {}, "tough"),
        ((pr, tol, tou, gt[:3]), {}, "target"),
        ((torch.full_like(pr, float("nan")), tol, tou, gt), {}, "student"),
        ((pr, torch.full_like(tol, float("inf")), tou, gt), {}, "tolerant"),
        ((pr, tol, tou, gt.tolist()), {}, "target"),
        ((pr, tol, tou, gt), {"alpha_neg_tough": 0.1}, "alpha_neg_tough"),
        ((pr, tol, tou, gt), {"alpha_tol": -1.0}, "alpha_tol"),
        ((pr, tol, tou, gt), {"band": 1.5}, "band"),
        ((pr, tol, tou, gt), {"slope": 0.0}, "slope"),
        ((pr, tol, tou, gt), {"main_weight": float("nan")}, "main_weight"),
        ((pr, tol, tou, gt), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            landmark_kd_loss(*args, **kw)
    for kw, name in (({"tough_weight": -1.0}, "tough_weight"), ({"band": -0.1}, "band")):
        with pytest.raises(ValueError, match=name):
            LandmarkKDLoss(**kw)
