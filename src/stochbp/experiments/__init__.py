"""The paper's experiments, built only on stochbp's public API."""
from __future__ import annotations

from stochbp.experiments.errors import UsageError
from stochbp.experiments.runner import Experiment
from stochbp.experiments.settings import Settings, SettingError


def registry() -> dict:
    from stochbp.experiments import discrete, gamma_toy, laplace_blr
    return {e.name: e for e in (gamma_toy.EXPERIMENT, laplace_blr.EXPERIMENT,
                                *discrete.EXPERIMENTS)}


def get(name: str) -> Experiment:
    experiments = registry()
    if name not in experiments:
        raise UsageError(f"unknown experiment {name!r}; valid experiments: "
                         f"{', '.join(sorted(experiments))}")
    return experiments[name]


__all__ = ["Experiment", "SettingError", "Settings", "UsageError", "get", "registry"]
