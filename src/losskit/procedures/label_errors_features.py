"""Unsupervised image features for the label-error demo: k-means on whitened patches.

The single-layer network of Coates, Lee & Ng (AISTATS 2011), small enough for a CPU and
learned without any label, so that a linear head trained by cross-validation on noisy labels
sees no clean label through its features:

1. ``n_patches`` random 6x6x3 patches of the images, each normalised (its mean removed,
   divided by ``sqrt(var + 10)`` in 0-255 pixel units) and ZCA-whitened (``eps = 0.1``);
2. ``n_centroids`` centroids by Lloyd's k-means (``iters`` rounds, seeded);
3. every 6x6 patch of an image (stride 1, 27x27 positions), normalised and whitened the same
   way, gets the "triangle" code ``f_k = max(0, mean_j d_j - d_k)`` (``d_k``: its distance to
   centroid ``k``), sum-pooled over the four image quadrants: ``4 n_centroids`` features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 6


def _normalise(patches: np.ndarray) -> np.ndarray:
    mean = patches.mean(axis=1, keepdims=True)
    var = patches.var(axis=1, keepdims=True)
    return (patches - mean) / np.sqrt(var + 10.0)


@dataclass(frozen=True)
class PatchKMeans:
    """The fitted pipeline: whitening (mean, matrix) and centroids (float32)."""

    mean: np.ndarray
    whiten: np.ndarray
    centroids: np.ndarray

    def transform(self, images: np.ndarray, *, stride: int = 1, batch: int = 500) -> np.ndarray:
        """Pooled triangle features ``[N, 4 * n_centroids]`` (float32) of uint8 images
        ``[N, 32, 32, 3]``, patches every ``stride`` pixels. Every patch step is a convolution:
        the patch mean and variance by a box filter, the whitening by 108 filters, the
        distances by a 1x1 convolution."""
        dim = 3 * PATCH * PATCH
        w = torch.from_numpy(self.whiten)
        filters = w.reshape(dim, 3, PATCH, PATCH)
        shift = w @ torch.from_numpy(self.mean)
        c = torch.from_numpy(self.centroids)
        box = torch.ones(1, 3, PATCH, PATCH)
        out = np.empty((len(images), 4 * len(c)), dtype=np.float32)
        for s in range(0, len(images), batch):
            x = torch.from_numpy(images[s : s + batch]).permute(0, 3, 1, 2).float() - 127.5
            mean = F.conv2d(x, box, stride=stride) / dim
            var = (F.conv2d(x * x, box, stride=stride) / dim - mean**2).clamp_min(0)
            z = (F.conv2d(x, filters, stride=stride) - mean * w.sum(dim=1).view(1, -1, 1, 1)) / (
                var + 10
            ).sqrt()
            z = z - shift.view(1, -1, 1, 1)
            d2 = (z * z).sum(dim=1, keepdim=True) - 2 * F.conv2d(z, c.view(len(c), dim, 1, 1))
            d = (d2 + (c * c).sum(dim=1).view(1, -1, 1, 1)).clamp_min(0).sqrt()
            f = (d.mean(dim=1, keepdim=True) - d).clamp_min(0)
            h = f.shape[-1] // 2 + 1
            quads = [f[..., :h, :h], f[..., :h, h:], f[..., h:, :h], f[..., h:, h:]]
            out[s : s + len(x)] = torch.cat([q.sum(dim=(2, 3)) for q in quads], dim=1).numpy()
        return out


def fit_patch_kmeans(
    images: np.ndarray,
    *,
    n_centroids: int = 200,
    n_patches: int = 50_000,
    iters: int = 10,
    seed: int = 0,
) -> PatchKMeans:
    """Whitening and k-means centroids from random patches of ``images`` (module docstring)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(images), n_patches)
    r, c = rng.integers(0, 32 - PATCH + 1, (2, n_patches))
    patches = np.stack(  # (channel, row, col) order, as the convolution filters
        [
            images[i, a : a + PATCH, b : b + PATCH].transpose(2, 0, 1).reshape(-1)
            for i, a, b in zip(idx, r, c, strict=True)
        ]
    ).astype(np.float64)
    x = _normalise(patches)
    mean = x.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    whiten = vecs @ np.diag(1.0 / np.sqrt(vals + 0.1)) @ vecs.T
    z = torch.from_numpy(((x - mean) @ whiten).astype(np.float32))
    centroids = z[torch.from_numpy(rng.choice(n_patches, n_centroids, replace=False))].clone()
    for _ in range(iters):
        d = (centroids**2).sum(dim=1) - 2 * z @ centroids.T
        nearest = d.argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, z)
        counts = torch.bincount(nearest, minlength=n_centroids).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return PatchKMeans(
        mean=mean.astype(np.float32), whiten=whiten.astype(np.float32), centroids=centroids.numpy()
    )
