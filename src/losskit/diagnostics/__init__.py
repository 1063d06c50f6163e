"""Measures of data, labels, predictions and representations."""

from losskit.diagnostics.calibration import (
    ReliabilityBins,
    classwise_ece,
    expected_calibration_error,
    reliability_bins,
)

__all__ = [
    "ReliabilityBins",
    "classwise_ece",
    "expected_calibration_error",
    "reliability_bins",
]
