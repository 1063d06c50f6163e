import pytest
import torch

from losskit.multilabel.code_attention import CodeWiseAttention


def make(hidden_dim=6, num_labels=4, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return CodeWiseAttention(hidden_dim, num_labels).to(dtype)


def inputs(n=3, t=7, d=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, t, d, generator=g, dtype=dtype)
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[0, t - 2 :] = True
    pad[-1, 2:] = True
    return h, pad


def slow_head(head, h, pad):
    """TransICD's head label by label and token by token."""
    n, t, _ = h.shape
    logits = torch.zeros(n, head.num_labels, dtype=h.dtype)
    attn = torch.zeros(n, head.num_labels, t, dtype=h.dtype)
    for i in range(n):
        for lab in range(head.num_labels):
            scores = []
            for s in range(t):
                u = torch.tanh(head.project.weight @ h[i, s] + head.project.bias)
                scores.append(head.query.weight[lab] @ u + head.query.bias[lab])
            scores = torch.stack(scores)
            keep = ~pad[i]
            a = torch.zeros(t, dtype=h.dtype)
            a[keep] = torch.softmax(scores[keep], dim=0)
            v = (a[:, None] * h[i]).sum(dim=0)
            attn[i, lab] = a
            logits[i, lab] = head.out_weight[lab] @ v + head.out_bias[lab]
    return logits, attn


def test_matches_slow_loop_value_and_gradient():
    head = make()
    h, pad = inputs()
    logits, attn = head(h, pad, return_attention=True)
    ref_logits, ref_attn = slow_head(head, h, pad)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(attn, ref_attn)
    g = torch.randn_like(logits)
    fast = torch.autograd.grad((logits * g).sum(), list(head.parameters()))
    slow = torch.autograd.grad((slow_head(head, h, pad)[0] * g).sum(), list(head.parameters()))
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b)


def test_padding_gets_zero_attention_and_rows_sum_to_one():
    head = make()
    h, pad = inputs()
    attn = head.attention(h, pad)
    assert attn.shape == (3, 4, 7)
    assert (attn.transpose(1, 2)[pad] == 0).all()
    torch.testing.assert_close(attn.sum(dim=-1), torch.ones(3, 4, dtype=h.dtype))
    # padded tokens do not influence the logits at all
    h2 = h.clone()
    h2[pad] = 100.0
    torch.testing.assert_close(head(h2, pad), head(h, pad))


def test_permuting_labels_permutes_outputs():
    head = make()
    h, pad = inputs()
    perm = torch.tensor([2, 0, 3, 1])
    other = make(seed=5)
    with torch.no_grad():
        other.project.load_state_dict(head.project.state_dict())
        other.query.weight.copy_(head.query.weight[perm])
        other.query.bias.copy_(head.query.bias[perm])
        other.out_weight.copy_(head.out_weight[perm])
        other.out_bias.copy_(head.out_bias[perm])
    logits, attn = head(h, pad, return_attention=True)
    logits_p, attn_p = other(h, pad, return_attention=True)
    torch.testing.assert_close(logits_p, logits[:, perm])
    torch.testing.assert_close(attn_p, attn[:, perm])


def test_gradcheck_and_half_precision():
    head = make(hidden_dim=3, num_labels=2)
    h, pad = inputs(2, 4, 3)
    hg = h.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: head(z, pad), (hg,))
    half = make(dtype=torch.float32).to(torch.bfloat16)
    hb, padb = inputs(dtype=torch.float32)
    out, attn = half(hb.to(torch.bfloat16), padb, return_attention=True)
    assert out.dtype == attn.dtype == torch.bfloat16
    assert torch.isfinite(out).all() and (attn.transpose(1, 2)[padb] == 0).all()
    ref = half.float()(hb.to(torch.bfloat16).float(), padb)
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


def test_bad_inputs():
    head = make()
    h, pad = inputs()
    with pytest.raises(ValueError, match="hidden"):
        head(h[0])
    with pytest.raises(ValueError, match="hidden"):
        head(h[..., :5])
    with pytest.raises(ValueError, match="hidden"):
        head(h.long())
    with pytest.raises(ValueError, match="padding_mask"):
        head(h, pad[:, :3])
    with pytest.raises(ValueError, match="padding_mask"):
        head(h, pad.float())
    for kw in ({"hidden_dim": 0, "num_labels": 3}, {"hidden_dim": 3, "num_labels": 2.5}):
        with pytest.raises(ValueError, match="hidden_dim|num_labels"):
            CodeWiseAttention(**kw)
    with pytest.raises(ValueError, match="attn_expansion"):
        CodeWiseAttention(4, 2, attn_expansion=0)
