"""The paper's experiments, built only on stochbp's public API.

Needs the ``experiments`` extra (optax, matplotlib, scikit-learn, tqdm); ``import
stochbp`` never imports this package. Its modules:

* ``settings``: typed, frozen, validated settings (each experiment's dataclass);
* ``labels``: the one naming scheme of estimator labels;
* ``runner``: the grid of runs, checkpoints, resumption, atomic result files;
* ``continuous``: what the Section 6 experiments ``gamma_toy`` and ``laplace_blr``
  share (optimiser state, scanned steps, init / advance / evaluate hooks);
* ``discrete`` and ``discrete_models``: the Appendix B experiments and their models;
* ``reporting``: what every report and figure shares; ``report`` and ``plots`` (Section
  6), ``discrete_report`` (Appendix B) build on it.
"""
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
