"""Mini-batches that pair a labelled set with a second pool (pseudo-labelled or unlabeled).

One epoch is one pass over the labelled set in batches of ``batch_size``
(``torch.randperm(n, generator=generator).split(batch_size)``) and, alongside, one pass over
the pool: its own permutation, drawn from ``pool_generator``, cut into as many contiguous
chunks as there are labelled batches (``torch.tensor_split``, sizes differing by at most
one; a chunk is empty when the pool is smaller than the number of batches). Because the two
permutations come from two generators, the labelled batches do not depend on the pool at
all: a recipe whose pool term has weight 0 sees exactly the batches of plain supervised
training with the same seed. Shared by the paper-15 and paper-41 recipes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

POOL_SEED_OFFSET = 1_000_003  # the pool's generator is seeded with seed + this offset


def check_count(name: str, value: int, low: int) -> int:
    """``value`` as an int >= ``low`` (bools refused), else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """The labelled and the pool generator of a run seeded ``seed`` (a non-negative int)."""
    seed = check_count("seed", seed, 0)
    return (
        torch.Generator().manual_seed(seed),
        torch.Generator().manual_seed(seed + POOL_SEED_OFFSET),
    )


def paired_batches(
    n: int,
    n_pool: int,
    batch_size: int,
    generator: torch.Generator,
    pool_generator: torch.Generator,
) -> list[tuple[Tensor, Tensor]]:
    """One epoch of ``(labelled indices, pool indices)`` pairs; see the module docstring.
    With ``n_pool == 0`` the pool generator is not used and every pool chunk is empty."""
    n = check_count("n", n, 1)
    n_pool = check_count("n_pool", n_pool, 0)
    batch_size = check_count("batch_size", batch_size, 1)
    labelled = torch.randperm(n, generator=generator).split(batch_size)
    if n_pool == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return [(b, empty) for b in labelled]
    pool = torch.tensor_split(torch.randperm(n_pool, generator=pool_generator), len(labelled))
    return list(zip(labelled, pool, strict=True))
