"""Objectives on predictions and continuous targets (DESIGN.md ``regression/``)."""

from losskit.regression.conr import ConRLoss, conr_loss

__all__ = ["ConRLoss", "conr_loss"]
