import pytest
import torch

from losskit._core.registry import get
from losskit.distillation.latent import (
    LatentDistillationLoss,
    attention_map_loss,
    hidden_state_loss,
    latent_distillation_loss,
    uniform_layer_map,
)
from tests.contract import check_matches_reference

N, T, DS, DT, H = 3, 5, 4, 6, 2


def states(seed=0, n=N, t=T, ds=DS, dt=DT, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, t, ds, generator=g, dtype=dtype)
    te = torch.randn(n, t, dt, generator=g, dtype=dtype)
    w = torch.randn(ds, dt, generator=g, dtype=dtype) / ds**0.5
    return s, te, w


def maps(seed=0, n=N, h=H, t=T, dtype=torch.float64, mask=None):
    """Two sets of attention maps; with ``mask`` each row is a softmax over the real keys."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        z = 2 * torch.randn(n, h, t, t, generator=g, dtype=dtype)
        if mask is not None:
            z = z.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        out.append(torch.softmax(z, dim=-1))
    return tuple(out)


def mask_for(lengths, t=T):
    return torch.tensor([[1] * k + [0] * (t - k) for k in lengths])


LENGTHS = (5, 3, 1)


# (a) slow references: loops over samples, tokens, heads, features


def slow_hidden(s, te, w, mask):
    out = []
    for i in range(s.shape[0]):
        acc, count = 0.0, 0
        for j in range(s.shape[1]):
            if mask[i, j]:
                for d in range(te.shape[2]):
                    proj = sum(s[i, j, k] * w[k, d] for k in range(s.shape[2]))
                    acc = acc + (proj - te[i, j, d]) ** 2
                    count += 1
        out.append(acc / count)
    return torch.stack(out)


def slow_attention(a, b, mask, mode):
    out = []
    for i in range(a.shape[0]):
        rows = [j for j in range(a.shape[2]) if mask[i, j]]
        per_head = []
        for h in range(a.shape[1]):
            if mode == "mse":
                vals = [(a[i, h, q, k] - b[i, h, q, k]) ** 2 for q in rows for k in rows]
                per_head.append(sum(vals) / len(vals))
            else:
                kls = [
                    sum(b[i, h, q, k] * torch.log(b[i, h, q, k] / a[i, h, q, k]) for k in rows)
                    for q in rows
                ]
                per_head.append(sum(kls) / len(kls))
        out.append(sum(per_head) / len(per_head))
    return torch.stack(out)


def test_hidden_matches_slow_reference_value_and_gradient():
    s, te, w = states()
    mask = mask_for(LENGTHS)
    check_matches_reference(
        lambda a, b: hidden_state_loss(a, te, b, attention_mask=mask, reduction="none"),
        lambda a, b: slow_hidden(a, te, b, mask),
        s,
        w,
    )


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_attention_matches_slow_reference_value_and_gradient(mode):
    mask = mask_for(LENGTHS)
    a, b = maps(mask=mask)
    check_matches_reference(
        lambda z: attention_map_loss(z, b, attention_mask=mask, mode=mode, reduction="none"),
        lambda z: slow_attention(z, b, mask, mode),
        a,
    )


# (b) the paper's properties


def test_zero_when_student_equals_teacher_with_identity_projection():
    s, _, _ = states(ds=DT)
    a, _ = maps()
    assert hidden_state_loss(s, s, None) == 0
    assert hidden_state_loss(s, s, torch.eye(DT, dtype=torch.float64)) == 0
    for mode in ("mse", "kl"):
        assert attention_map_loss(a, a, mode=mode) == 0
    hs, attn = [s, s + 1, s - 1], [a, a.flip(1)]
    module = LatentDistillationLoss(DT, DT, [(0, 0), (1, 1), (2, 2)]).double()
    assert module(hs, hs, attn, attn, attention_mask=mask_for(LENGTHS)) == 0


def test_padding_is_invisible_and_gets_zero_gradient():
    s, te, w = states()
    mask = mask_for(LENGTHS)
    a, b = maps(mask=mask)
    g = torch.Generator().manual_seed(3)
    junk_s = torch.where(mask[..., None].bool(), s, torch.randn(s.shape, generator=g).double())
    junk_a = torch.where(
        mask[:, None, None, :].bool(), a, torch.rand(a.shape, generator=g).double()
    )
    sg, ag = junk_s.clone().requires_grad_(True), junk_a.clone().requires_grad_(True)
    out = hidden_state_loss(sg, te, w, attention_mask=mask, reduction="none")
    for i, k in enumerate(LENGTHS):  # each sample alone, unpadded, gives the same value
        alone = hidden_state_loss(s[i : i + 1, :k], te[i : i + 1, :k], w, reduction="none")
        torch.testing.assert_close(out[i : i + 1], alone)
    out.sum().backward()
    assert (sg.grad[~mask.bool()] == 0).all()
    for mode in ("mse", "kl"):
        ag.grad = None
        att = attention_map_loss(ag, b, attention_mask=mask, mode=mode, reduction="none")
        for i, k in enumerate(LENGTHS):
            alone = attention_map_loss(a[i : i + 1, :, :k, :k], b[i : i + 1, :, :k, :k], mode=mode)
            torch.testing.assert_close(att[i], alone)
        att.sum().backward()
        pad = ~(mask[:, :, None].bool() & mask[:, None, :].bool())
        assert (ag.grad.permute(0, 2, 3, 1)[pad] == 0).all()


def test_heads_mean_compares_head_averaged_maps():
    a, _ = maps(h=4)
    _, b = maps(seed=1, h=2)
    got = attention_map_loss(a, b, heads="mean", reduction="none")
    want = attention_map_loss(a.mean(1, keepdim=True), b.mean(1, keepdim=True), reduction="none")
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="heads"):
        attention_map_loss(a, b)


def test_latent_loss_is_the_sum_of_its_terms_and_trains_the_projections():
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(N, T, DS, generator=g, dtype=torch.float64) for _ in range(3)]
    ht = [torch.randn(N, T, DT, generator=g, dtype=torch.float64) for _ in range(7)]
    mask = mask_for(LENGTHS)
    sa = [maps(i, mask=mask)[0] for i in range(2)]
    ta = [maps(i + 5, mask=mask)[1] for i in range(6)]
    lmap = uniform_layer_map(2, 6)
    assert lmap == [(0, 0), (1, 3), (2, 6)]
    module = LatentDistillationLoss(DS, DT, lmap, mode="kl").double()
    we, wh = module.embedding_projection, module.hidden_projection
    want = hidden_state_loss(hs[0], ht[0], we, attention_mask=mask, reduction="none")
    for m, n in lmap[1:]:
        want = want + hidden_state_loss(hs[m], ht[n], wh, attention_mask=mask, reduction="none")
        want = want + attention_map_loss(
            sa[m - 1], ta[n - 1], attention_mask=mask, mode="kl", reduction="none"
        )
    tg = [h.clone().requires_grad_(True) for h in ht]
    got = module(hs, tg, sa, ta, attention_mask=mask)
    torch.testing.assert_close(got, want.mean())
    got.backward()
    assert we.weight.grad is not None and wh.weight.grad is not None
    assert all(t.grad is None for t in tg)
    no_attn = LatentDistillationLoss(DS, DT, lmap, attention=False).double()
    no_attn.load_state_dict(module.state_dict())
    hidden_only = sum(
        hidden_state_loss(hs[m], ht[n], we if m == 0 else wh, attention_mask=mask, reduction="none")
        for m, n in lmap
    )
    torch.testing.assert_close(no_attn(hs, ht, sa, ta, attention_mask=mask), hidden_only.mean())


def test_linear_projection_with_bias_and_registry():
    s, te, _ = states()
    lin = torch.nn.Linear(DS, DT).double()
    want = ((lin(s) - te) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(hidden_state_loss(s, te, lin, reduction="none"), want)
    entry = get("latent_distillation")
    assert entry.papers == (1,) and entry.module is LatentDistillationLoss
    assert isinstance(
        entry.build(student_dims=4, teacher_dims=4, layer_map=[(1, 1)]), torch.nn.Module
    )


# (c) gradcheck, (d) half precision, (e) bad inputs, (f) reductions


def test_gradcheck():
    s, te, w = states(n=2, t=3, ds=2, dt=3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    a, b = maps(n=2, h=2, t=3, mask=mask)
    s, w, a = (x.clone().requires_grad_(True) for x in (s, w, a))
    assert torch.autograd.gradcheck(
        lambda x, p: hidden_state_loss(x, te, p, attention_mask=mask, reduction="sum"), (s, w)
    )
    for mode in ("mse", "kl"):
        assert torch.autograd.gradcheck(
            lambda x, m=mode: attention_map_loss(x, b, attention_mask=mask, mode=m), (a,)
        )


def test_half_precision():
    s, te, w = states(dtype=torch.float32)
    mask = mask_for(LENGTHS)
    a, b = maps(dtype=torch.float32, mask=mask)
    for dtype in (torch.float16, torch.bfloat16):
        sh, ah = s.to(dtype).requires_grad_(True), a.to(dtype).requires_grad_(True)
        out = hidden_state_loss(sh, te.to(dtype), w, attention_mask=mask, reduction="none")
        ref = hidden_state_loss(sh.detach().float(), te.to(dtype).float(), w, attention_mask=mask)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float().mean(), ref, rtol=2e-2, atol=2e-2)
        for mode in ("mse", "kl"):
            att = attention_map_loss(ah, b.to(dtype), attention_mask=mask, mode=mode)
            ref = attention_map_loss(ah.detach().float(), b.to(dtype).float(), mode=mode,
                                     attention_mask=mask)  # fmt: skip
            assert att.dtype == dtype
            torch.testing.assert_close(att.float(), ref, rtol=2e-2, atol=2e-3)
            att.backward()
        out.sum().backward()
        assert torch.isfinite(sh.grad).all() and torch.isfinite(ah.grad).all()


def test_reductions():
    s, te, w = states()
    mask = mask_for(LENGTHS)
    a, b = maps(mask=mask)
    for fn, args in ((hidden_state_loss, (s, te, w)), (attention_map_loss, (a, b))):
        none = fn(*args, attention_mask=mask, reduction="none")
        assert none.shape == (N,)
        torch.testing.assert_close(fn(*args, attention_mask=mask, reduction="sum"), none.sum())
        torch.testing.assert_close(fn(*args, attention_mask=mask, reduction="mean"), none.mean())
    hs, ht = [s, s.flip(1)], [te, te.flip(1)]
    kw = {"layer_map": [(0, 0), (1, 1)], "hidden_projection": w, "embedding_projection": w}
    none = latent_distillation_loss(hs, ht, **kw, attention_mask=mask, reduction="none")
    assert none.shape == (N,)
    torch.testing.assert_close(
        latent_distillation_loss(hs, ht, **kw, attention_mask=mask, reduction="sum"), none.sum()
    )


def test_bad_inputs():
    s, te, w = states()
    a, b = maps()
    cases = [
        (lambda: hidden_state_loss(s, te[:2], w), "teacher_hidden"),
        (lambda: hidden_state_loss(s[0], te, w), "student_hidden"),
        (lambda: hidden_state_loss(s, te, None), "projection"),
        (lambda: hidden_state_loss(s, te, w.t()), "projection"),
        (lambda: hidden_state_loss(s, te, w, reduction="avg"), "reduction"),
        (lambda: hidden_state_loss(s * float("nan"), te, w), "student_hidden"),
        (
            lambda: hidden_state_loss(s, te, w, attention_mask=torch.ones(N, T + 1)),
            "attention_mask",
        ),
        (
            lambda: hidden_state_loss(s, te, w, attention_mask=torch.full((N, T), 2)),
            "attention_mask",
        ),
        (lambda: hidden_state_loss(s, te, w, attention_mask=mask_for((5, 0, 1))), "attention_mask"),
        (lambda: attention_map_loss(a, b[:, :, :3, :3]), "teacher_attn"),
        (lambda: attention_map_loss(a, b, mode="cos"), "mode"),
        (lambda: attention_map_loss(a, b, heads="max"), "heads"),
        (lambda: attention_map_loss(a - 1, b, mode="kl"), "probabilities"),
        (lambda: attention_map_loss(a, b * 0.9, mode="kl"), "teacher_attn"),  # dropout-scaled
        (lambda: attention_map_loss(a, b, attention_mask=mask_for(LENGTHS), mode="kl"), "student"),
        (lambda: latent_distillation_loss([s], [te], [(0, 1)], hidden_projection=w), "layer_map"),
        (lambda: latent_distillation_loss([s], [te], [(1, 1)], hidden_projection=w), "layer_map"),
        (lambda: latent_distillation_loss([s], [te], [], hidden_projection=w), "layer_map"),
        (lambda: LatentDistillationLoss(0, DT, [(1, 1)]), "student_dims"),
        (lambda: LatentDistillationLoss(DS, 2.5, [(1, 1)]), "teacher_dims"),
        (lambda: LatentDistillationLoss(DS, DT, [(1, 1)], mode="l1"), "mode"),
        (lambda: LatentDistillationLoss(DS, DT, [(1, 1)], reduction="avg"), "reduction"),
        (lambda: uniform_layer_map(7, 6), "student_layers"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
