"""Figures (PNG, matplotlib) from a results directory; mean +- std over seeds."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from stochbp.experiments import io
from stochbp.experiments.runner import load_runs

COLORS = {"fourier": "C0", "fourier-n4": "C0", "fourier-n8": "C4", "pathwise": "C1",
          "score_function": "C2", "grg": "C3"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def grouped(runs, keys):
    groups = defaultdict(list)
    for r in runs:
        groups[tuple(r["config"][k] for k in keys)].append(r)
    return groups


def series(runs, table: str, field: str):
    """(x, mean, std) over seeds of `field` in each run's `steps` or `evals` rows."""
    rows = [[row for row in r[table] if field in row] for r in runs]
    n = min(len(x) for x in rows)
    x = np.array([row["step"] for row in rows[0][:n]])
    y = np.array([[row[field] for row in rr[:n]] for rr in rows], dtype=float)
    return x, np.nanmean(y, 0), np.nanstd(y, 0)


def _band(ax, x, m, s, label, color):
    ax.plot(x, m, label=label, color=color, lw=1.3)
    ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)


def _save(fig, out: Path, name: str) -> Path:
    path = Path(out) / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _plt().close(fig)
    return path


def gamma_figures(out: Path) -> list:
    plt = _plt()
    runs = load_runs(out)
    paths = []
    groups = grouped(runs, ["toy", "dim", "estimator"])
    for toy in sorted({k[0] for k in groups}):
        dims = sorted({k[1] for k in groups if k[0] == toy})
        fig, axes = plt.subplots(2, len(dims), figsize=(4.2 * len(dims), 6.5), squeeze=False)
        for j, d in enumerate(dims):
            for (t, dd, est), rs in sorted(groups.items()):
                if t != toy or dd != d:
                    continue
                _band(axes[0, j], *series(rs, "steps", "loss"), est, COLORS.get(est))
                _band(axes[1, j], *series(rs, "evals", "grad_log_variance"), est,
                      COLORS.get(est))
            axes[0, j].set_title(f"toy {toy}, d = {d}")
            axes[0, j].set_yscale("log")
            axes[0, j].set_ylabel("exact loss E[f]")
            axes[1, j].set_ylabel("log variance of gradient")
            axes[1, j].set_xlabel("iteration")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"Gamma toy problem {toy} (cf. paper Fig. {toy}); mean ± std over seeds")
        paths.append(_save(fig, out, f"gamma_toy{toy}.png"))
    return paths


def blr_figures(out: Path) -> list:
    plt = _plt()
    runs = load_runs(out)
    groups = grouped(runs, ["estimator"])
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (est,), rs in sorted(groups.items()):
        for ax, field in zip(axes, ("elbo", "grad_log_variance", "accuracy")):
            _band(ax, *series(rs, "evals", field), est, COLORS.get(est))
    for ax, label in zip(axes, ("full-data ELBO", "log variance of gradient",
                                "accuracy (whole data set)")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
    axes[0].set_ylim(bottom=max(axes[0].get_ylim()[0], -2000))
    axes[0].legend(fontsize=8)
    fig.suptitle("Laplace Bayesian logistic regression (cf. paper Fig. 3)")
    paths.append(_save(fig, out, "blr_training.png"))

    tpath = Path(out) / "analysis" / "truncation.json"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if tpath.exists():
        t = io.read_json(tpath)
        rows = [r for r in t["rows"] if r["truncation"] is not None]
        N = [r["truncation"] for r in rows]
        axes[0].semilogy(N, [r["bias_norm"] for r in rows], "o-", label="fourier: ||bias||")
        axes[0].semilogy(N, [r["bias_noise_norm"] for r in rows], "k:", label="MC noise level")
        axes[0].semilogy(N, [r["mean_variance"] for r in rows], "s-", label="fourier: variance")
        for r in t["rows"]:
            if r["truncation"] is None:
                axes[0].axhline(r["mean_variance"], ls="--", color=COLORS[r["estimator"]],
                                label=f"{r['estimator']}: variance")
        axes[0].set_xlabel("truncation level N (order 2N)")
        axes[0].set_title(f"fixed theta (epoch {t['epoch']})")
        axes[0].legend(fontsize=7)
    fourier_runs = {k: v for k, v in groups.items() if k[0].startswith("fourier")}
    for (est,), rs in sorted(fourier_runs.items()):
        for other, ls in (("pathwise", "-"), ("score_function", "--")):
            x, m, s = series(rs, "evals", f"mse_vs_{other}")
            axes[1].semilogy(x, m, ls, color=COLORS.get(est), label=f"{est} vs {other}")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("MSE between gradient estimates")
    axes[1].legend(fontsize=7)
    for (est,), rs in sorted(groups.items()):
        x, m, s = series(rs, "evals", "grad_norm")
        axes[2].semilogy(x, m, color=COLORS.get(est), label=est)
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("gradient norm")
    axes[2].legend(fontsize=7)
    fig.suptitle("Truncation, agreement between estimators and gradient norms "
                 "(cf. paper Fig. 4)")
    paths.append(_save(fig, out, "blr_truncation_mse_norms.png"))
    return paths
