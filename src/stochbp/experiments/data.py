"""Data for the continuous experiments."""
from __future__ import annotations

import numpy as np


def breast_cancer():
    """UCI breast cancer (Wisconsin diagnostic), shipped with scikit-learn.

    Returns (X, y): X standardised per feature (569, 30), y in {-1, 1} (1 = malignant).
    """
    from sklearn.datasets import load_breast_cancer
    data = load_breast_cancer()
    X = np.asarray(data.data, dtype=np.float64)
    X = (X - X.mean(0)) / X.std(0)
    y = np.where(data.target == 0, 1.0, -1.0)  # sklearn: 0 = malignant
    return X, y
