"""Label-Agnostic Forgetting (LAF, paper 10): supervision-free unlearning of a classifier's
representation extractor.

The classifier is ``head(encoder(x))``. Given the remaining inputs ``D_r`` and the inputs to
forget ``D_f``, and no label of either, LAF changes the encoder only; the head is kept.

Stage 0, variational approximation. Two VAEs, ``h_r`` and ``h_f``, are fitted to the frozen
original representations ``e = g*(x)`` of ``D_r`` and of ``D_f`` with, per batch of size B,

    L_VAE = (1/B) sum_b ||h(e_b) - e_b||^2 + beta (1/B) sum_b KL(q(z | e_b) || N(0, I)),

``beta = 0.025``, ``h(e)`` the decoder's output at a reparameterised sample ``z``.

Stage 1, alternating per batch (a batch of ``D_f`` zipped with a batch of ``D_r``, both
reshuffled every epoch; an epoch ends with the shorter of the two, as ``zip`` of two loaders):

- (UE) extractor unlearning, one Adam(``lr_ue``) step on

      L_UE = sum_{x in D_r} phi(m_r(x)) - sum_{x in D_f} phi(m_f(x)),   phi(m) = exp(m / (m + 1)),

  ``m_r(x) = ||h_r(g(x)) - g(x)||^2``, ``m_f(x) = ||h_f(g(x)) - g(x)||^2`` (summed over the
  representation's coordinates): remaining representations stay where ``h_r`` reconstructs
  them, forgotten ones leave the region ``h_f`` reconstructs; ``phi`` lies in [1, e), so
  each sample's push is bounded.
- (RA) representation alignment, one Adam(``lr_ra``) step on the contrastive loss

      L_RA = sum_{i in D_r} [ d_i - log sum_{j in D_f} exp(d_j / T) ],  d = 1 - cos(g(x), g*(x)),

  which pulls the remaining representations onto the original model's (numerator) and pushes
  the forgotten ones away from theirs (denominator). With ``g = g*`` it equals
  ``-N_r log N_f``.

Defaults: the reference code's settings for its small CNN on MNIST (``hyperparameter.md``):
latent dimension 8, 20 epochs, ``lr_ue = 5e-5``, ``lr_ra = 1e-4``, ``T = 20`` (class removal;
the code uses 5 for random removal), VAEs trained 10 epochs at lr 1e-3, batches of 32.

Relation to the reference code (``ShaofeiShen768/LAF``): the forms of ``L_UE`` and ``L_RA``
follow it (a distance ``1 - cos`` and ``T`` on the forget terms only). Its notebook fits
``h_r`` on the whole training set; here ``h_r`` sees ``D_r`` only, as the paper describes. Its
VAE decoder ends in a sigmoid although representations are unbounded; here the output is
linear. The encoder runs in eval mode (batch-norm statistics and dropout frozen). The paper's
optional semi-supervised repair of the head with labels is not part of this function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number
from losskit._core.registry import register


class RepresentationVAE(nn.Module):
    """A small Gaussian VAE on representations ``[B, dim]``: encoder ``dim -> hidden ->
    (mu, log var)`` of size ``latent_dim``, decoder back to ``dim`` with a linear output."""

    def __init__(self, dim: int, latent_dim: int = 8, hidden: tuple[int, int] = (128, 32)):
        super().__init__()
        if int(dim) < 1 or int(latent_dim) < 1 or min(hidden) < 1:
            raise ValueError(
                f"dim, latent_dim and hidden must be >= 1, got {dim}, {latent_dim}, {hidden}"
            )
        h1, h2 = hidden
        self.encoder = nn.Sequential(nn.Linear(dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.mu = nn.Linear(h2, latent_dim)
        self.log_var = nn.Linear(h2, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, dim)
        )

    def forward(
        self, e: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction at ``z = mu + exp(log_var / 2) * eps``, and ``mu``, ``log_var``
        (``eps`` drawn on the CPU from ``generator``, then moved to the input's device)."""
        hidden = self.encoder(e)
        mu, log_var = self.mu(hidden), self.log_var(hidden)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return self.decoder(mu + torch.exp(0.5 * log_var) * eps), mu, log_var


def vae_loss(
    recon: Tensor, e: Tensor, mu: Tensor, log_var: Tensor, kl_weight: float = 0.025
) -> Tensor:
    """``L_VAE``: summed squared error plus ``kl_weight`` times the Gaussian KL, per sample."""
    sq = (recon - e).pow(2).sum()
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum()
    return (sq + kl_weight * kl) / e.shape[0]


def _check_pair(name: str, a: Tensor, b: Tensor) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"{name} and its partner must be torch.Tensors")
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(
            f"{name} and its partner must share a non-empty shape [N, D], "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def laf_extractor_loss(
    recon_remain: Tensor, e_remain: Tensor, recon_forget: Tensor, e_forget: Tensor
) -> Tensor:
    """``L_UE = sum_r phi(m_r) - sum_f phi(m_f)`` with ``phi(m) = exp(m / (m + 1))`` and
    ``m = ||recon - e||^2`` per row (see the module docstring)."""
    _check_pair("recon_remain", recon_remain, e_remain)
    _check_pair("recon_forget", recon_forget, e_forget)
    m_r = (recon_remain - e_remain).pow(2).sum(dim=1)
    m_f = (recon_forget - e_forget).pow(2).sum(dim=1)
    return torch.exp(m_r / (m_r + 1)).sum() - torch.exp(m_f / (m_f + 1)).sum()


def laf_alignment_loss(
    e_remain: Tensor, e_remain_orig: Tensor, e_forget: Tensor, e_forget_orig: Tensor, *,
    temperature: float = 20.0,
) -> Tensor:  # fmt: skip
    """``L_RA = sum_i [d_i - logsumexp_j(d_j / T)]``, ``d = 1 - cos(new, original)`` over the
    remaining rows ``i`` and the forgotten rows ``j`` (see the module docstring)."""
    t = check_number("temperature", temperature, low=0.0, low_open=True)
    _check_pair("e_remain", e_remain, e_remain_orig)
    _check_pair("e_forget", e_forget, e_forget_orig)
    d_r = 1 - F.cosine_similarity(e_remain, e_remain_orig, dim=1)
    d_f = 1 - F.cosine_similarity(e_forget, e_forget_orig, dim=1)
    return (d_r - torch.logsumexp(d_f / t, dim=0)).sum()


def _check_inputs(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape [N, ...] with N >= 1, got {tuple(x.shape)}")
    check_finite(name, x)
    return x


def _represent(encoder: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    with torch.no_grad():
        out = torch.cat([encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    if out.ndim != 2:
        raise ValueError(f"encoder must return representations [N, D], got {tuple(out.shape)}")
    return out


def fit_representation_vae(
    e: Tensor, *, latent_dim: int = 8, epochs: int = 10, lr: float = 1e-3,
    batch_size: int = 32, kl_weight: float = 0.025, seed: int = 0,
) -> RepresentationVAE:  # fmt: skip
    """A :class:`RepresentationVAE` fitted to representations ``e[N, D]`` with Adam on
    ``L_VAE`` (shuffled batches, deterministic for a given ``seed``)."""
    _check_inputs("e", e)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = RepresentationVAE(e.shape[1], latent_dim).to(e.device, e.dtype)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(e), generator=g).split(batch_size):
            recon, mu, log_var = vae(e[idx], g)
            opt.zero_grad()
            vae_loss(recon, e[idx], mu, log_var, kl_weight).backward()
            opt.step()
    return vae.eval().requires_grad_(False)


@dataclass
class LAFResult:
    """The unlearned encoder (a copy; the input encoder is untouched), the two VAEs and the
    mean ``L_UE`` and ``L_RA`` per batch of every epoch."""

    encoder: nn.Module
    remain_vae: RepresentationVAE
    forget_vae: RepresentationVAE
    ue_loss: list[float] = field(default_factory=list)
    ra_loss: list[float] = field(default_factory=list)


def laf_unlearn(
    encoder: nn.Module, x_remain: Tensor, x_forget: Tensor, *, epochs: int = 20,
    lr_ue: float = 5e-5, lr_ra: float = 1e-4, temperature: float = 20.0, latent_dim: int = 8,
    vae_epochs: int = 10, vae_lr: float = 1e-3, kl_weight: float = 0.025,
    batch_size: int = 32, seed: int = 0,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> LAFResult:  # fmt: skip
    """LAF on ``encoder`` from the remaining inputs ``x_remain[N_r, ...]`` and the inputs to
    forget ``x_forget[N_f, ...]``: no labels are taken. ``epochs = 0`` returns an unchanged
    copy. Deterministic for a given ``seed`` (VAE initialisation, noise and batch order).
    ``on_epoch(epoch, encoder)``, if given, is called after every epoch (from 1) with the
    encoder being unlearned, e.g. to record a trajectory (it must not change the encoder)."""
    _check_inputs("x_remain", x_remain)
    _check_inputs("x_forget", x_forget)
    if x_remain.shape[1:] != x_forget.shape[1:]:
        raise ValueError(
            "x_remain and x_forget must share a sample shape, got "
            f"{tuple(x_remain.shape[1:])} and {tuple(x_forget.shape[1:])}"
        )
    for name, v in (("epochs", epochs), ("vae_epochs", vae_epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    for name, v in (("latent_dim", latent_dim), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    rates = {"lr_ue": lr_ue, "lr_ra": lr_ra, "vae_lr": vae_lr, "temperature": temperature}
    for name, v in rates.items():
        check_number(name, v, low=0.0, low_open=True)
    check_number("kl_weight", kl_weight, low=0.0)
    student = copy.deepcopy(encoder).eval()
    e_r, e_f = _represent(student, x_remain), _represent(student, x_forget)
    vae_kw = {
        "latent_dim": latent_dim,
        "epochs": vae_epochs,
        "lr": vae_lr,
        "batch_size": batch_size,
        "kl_weight": kl_weight,
    }
    h_r = fit_representation_vae(e_r, seed=seed, **vae_kw)
    h_f = fit_representation_vae(e_f, seed=seed + 1, **vae_kw)
    result = LAFResult(student, h_r, h_f)
    params = [p for p in student.parameters() if p.requires_grad]
    opt_ue = torch.optim.Adam(params, lr=lr_ue)
    opt_ra = torch.optim.Adam(params, lr=lr_ra)
    g = torch.Generator().manual_seed(seed + 2)
    for _ in range(epochs):
        batches_f = torch.randperm(len(x_forget), generator=g).split(batch_size)
        batches_r = torch.randperm(len(x_remain), generator=g).split(batch_size)
        ue_sum = ra_sum = 0.0
        for i_f, i_r in zip(batches_f, batches_r, strict=False):  # ends at the shorter
            z_r, z_f = student(x_remain[i_r]), student(x_forget[i_f])
            loss_ue = laf_extractor_loss(h_r(z_r, g)[0], z_r, h_f(z_f, g)[0], z_f)
            opt_ue.zero_grad()
            loss_ue.backward()
            opt_ue.step()
            loss_ra = laf_alignment_loss(
                student(x_remain[i_r]), e_r[i_r], student(x_forget[i_f]), e_f[i_f],
                temperature=temperature,
            )  # fmt: skip
            opt_ra.zero_grad()
            loss_ra.backward()
            opt_ra.step()
            ue_sum, ra_sum = ue_sum + loss_ue.item(), ra_sum + loss_ra.item()
        steps = min(len(batches_f), len(batches_r))
        result.ue_loss.append(ue_sum / steps)
        result.ra_loss.append(ra_sum / steps)
        if on_epoch is not None:
            on_epoch(len(result.ue_loss), student)
            student.eval()
    return result


register(
    "laf_unlearn",
    kind="procedure",
    family="procedures",
    papers=(10,),
    summary="Label-Agnostic Forgetting: VAE-guided extractor unlearning plus contrastive "
    "alignment to the original representations, without labels.",
    defaults={"epochs": 20, "lr_ue": 5e-5, "lr_ra": 1e-4, "temperature": 20.0, "latent_dim": 8},
    function=laf_unlearn,
)
