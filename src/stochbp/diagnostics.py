"""Public diagnostics: moments of gradient estimates and unbiasedness checks."""
from stochbp._src.diagnostics import (GradientStats, UnbiasedCheck, check_unbiased,
                                      gradient_estimates, gradient_stats,
                                      reference_gradient)

__all__ = ["GradientStats", "UnbiasedCheck", "check_unbiased", "gradient_estimates",
           "gradient_stats", "reference_gradient"]
