"""Embedding objectives: ``embeddings[N, D]`` + ``labels[N]`` (optionally against reference
candidates), or ``query[N, D]``/``keys[M, D]`` pairs with a positive index or mask (see
``losskit.embedding._common``)."""

from losskit.embedding.info_nce import InfoNCELoss, info_nce_loss
from losskit.embedding.supcon import SupConLoss, supcon_loss

__all__ = ["InfoNCELoss", "SupConLoss", "info_nce_loss", "supcon_loss"]
