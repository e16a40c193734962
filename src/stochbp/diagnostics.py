"""Public diagnostics: moments of gradient estimates, unbiasedness checks, and
side-by-side comparison of estimators (variance, time, variance x time)."""
from stochbp._src.diagnostics import (Comparison, ComparisonRow, GradientStats,
                                      UnbiasedCheck, check_unbiased, compare,
                                      gradient_estimates, gradient_stats,
                                      reference_gradient)

__all__ = ["Comparison", "ComparisonRow", "GradientStats", "UnbiasedCheck",
           "check_unbiased", "compare", "gradient_estimates", "gradient_stats",
           "reference_gradient"]
