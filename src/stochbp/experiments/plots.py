"""Figures (PNG, matplotlib) from a results directory: mean curves with a ± std band
(ddof = 1) where there are several seeds. Every estimator has its own colour, line style
and marker, so curves that lie on top of each other stay distinguishable."""
from __future__ import annotations

from pathlib import Path

from stochbp.experiments import io
from stochbp.experiments.reporting import (band, grouped, load_runs, pyplot, save_figure,
                                           seeds_note, series)

COLORS = {"fourier": "C0", "fourier-n2": "C9", "fourier-n4": "C0", "fourier-n8": "C4",
          "pathwise": "C1", "score_function": "C2", "grg": "C3"}
# (line style, marker) per estimator
STYLES = {"fourier": ("-", "o"), "fourier-n2": (":", "^"), "fourier-n4": ("--", "o"),
          "fourier-n8": ("-.", "s"), "pathwise": ("-", None), "score_function": ("-", "x"),
          "grg": ("--", "d")}
MARKS = 10  # markers per curve


def style(est: str, n_points: int) -> dict:
    """Colour, line style and sparse markers of an estimator's curve."""
    ls, marker = STYLES.get(est, ("-", None))
    return {"color": COLORS.get(est), "ls": ls, "marker": marker, "ms": 4,
            "markevery": max(1, n_points // MARKS), "fillstyle": "none",
            "zorder": 3 if est.startswith("fourier") else 2}  # Fourier drawn on top


def _band(ax, x, mean, std, est):
    kw = style(est, len(x))
    band(ax, x, mean, std, est, kw.pop("color"), **kw)


def gamma_figures(out: Path) -> list:
    plt = pyplot()
    runs = load_runs(out)
    paths = []
    groups = grouped(runs, ["toy", "dim", "estimator"])
    for toy in sorted({k[0] for k in groups}):
        dims = sorted({k[1] for k in groups if k[0] == toy})
        fig, axes = plt.subplots(2, len(dims), figsize=(4.6 * len(dims), 7), squeeze=False,
                                 layout="constrained")
        for j, d in enumerate(dims):
            for (t, dd, est), rs in sorted(groups.items()):
                if t != toy or dd != d:
                    continue
                _band(axes[0, j], *series(rs, "steps", "loss"), est)
                _band(axes[1, j], *series(rs, "evals", "grad_log_variance"), est)
            axes[0, j].set_title(f"toy {toy}, d = {d}")
            axes[0, j].set_yscale("log")
            axes[1, j].set_xlabel("iteration")
        axes[0, 0].set_ylabel("exact loss E[f] (log scale)")
        axes[1, 0].set_ylabel("log variance of the gradient")
        axes[0, 0].legend(fontsize=8)
        note = seeds_note([rs for k, rs in groups.items() if k[0] == toy])
        fig.suptitle(f"Gamma toy problem {toy} (cf. paper Fig. {toy}); {note}")
        paths.append(save_figure(fig, out, f"gamma_toy{toy}.png"))
    return paths


def blr_figures(out: Path) -> list:
    groups = grouped(load_runs(out), ["estimator"])
    return [_blr_training_figure(out, groups), _blr_truncation_figure(out, groups)]


def _blr_training_figure(out: Path, groups) -> Path:
    """ELBO, gradient log-variance and accuracy against iterations (cf. paper Fig. 3)."""
    fig, axes = pyplot().subplots(1, 3, figsize=(16, 4.5), layout="constrained")
    for (est,), rs in sorted(groups.items()):
        for ax, field in zip(axes, ("elbo", "grad_log_variance", "accuracy")):
            _band(ax, *series(rs, "evals", field), est)
    for ax, label in zip(axes, ("full-data ELBO", "log variance of the gradient",
                                "accuracy on all 569 points (a tie counts 1/2)")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
    axes[0].set_ylim(bottom=max(axes[0].get_ylim()[0], -2000))
    axes[0].legend(fontsize=8)
    fig.suptitle("Laplace Bayesian logistic regression (cf. paper Fig. 3); "
                 f"{seeds_note(groups.values())}")
    return save_figure(fig, out, "blr_training.png")


def _truncation_panel(ax, t: dict) -> None:
    """Bias norm and variance of fourier-nN against N, with the baselines' variances."""
    rows = [r for r in t["rows"] if r["truncation"] is not None]
    N = [r["truncation"] for r in rows]
    ax.semilogy(N, [r["bias_norm"] for r in rows], "o-", color="C0", label="fourier: ||bias||")
    ax.semilogy(N, [r["bias_noise_norm"] for r in rows], "k:", label="MC noise level")
    ax.semilogy(N, [r["mean_variance"] for r in rows], "s-", color="C3",
                label="fourier: variance")
    for r in t["rows"]:
        if r["truncation"] is None:
            ax.axhline(r["mean_variance"], ls="--", color=COLORS[r["estimator"]],
                       label=f"{r['estimator']}: variance")
    ax.set_xlabel("truncation level N: terms of Eq. 19 (order 2N)")
    ax.set_ylabel("norm of the bias, and mean variance (log scale)")
    ax.set_title(f"fixed theta (epoch {t['epoch']})")
    ax.legend(fontsize=7)


def _blr_truncation_figure(out: Path, groups) -> Path:
    """Truncation analysis, MSE between estimators and gradient norms (cf. Fig. 4)."""
    tpath = Path(out) / "analysis" / "truncation.json"
    fig, axes = pyplot().subplots(1, 3, figsize=(16, 5.2), layout="constrained")
    if tpath.exists():
        _truncation_panel(axes[0], io.read_json(tpath))
    fourier_runs = {k: v for k, v in groups.items() if k[0].startswith("fourier")}
    for (est,), rs in sorted(fourier_runs.items()):
        for other, ls in (("pathwise", "-"), ("score_function", "--")):
            x, m, s = series(rs, "evals", f"mse_vs_{other}")
            kw = style(est, len(x))
            kw["ls"] = ls
            axes[1].semilogy(x, m, label=f"{est} vs {other}", **kw)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("MSE between gradient estimates")
    axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    for (est,), rs in sorted(groups.items()):
        x, m, s = series(rs, "evals", "grad_norm")
        axes[2].semilogy(x, m, label=est, **style(est, len(x)))
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("norm of the mean gradient")
    axes[2].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    fig.suptitle("Truncation, agreement between estimators and gradient norms "
                 f"(cf. paper Fig. 4); middle and right: mean over "
                 f"{'/'.join(str(n) for n in sorted({len(r) for r in groups.values()}))} "
                 "seed(s), no band")
    return save_figure(fig, out, "blr_truncation_mse_norms.png")
