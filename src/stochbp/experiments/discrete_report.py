"""Figures and report section for the Appendix B experiments (discrete latent variables).

The paper's numbers below are typed in from Echraibi et al. (2020), "Fourier stochastic
backpropagation", Appendix B, Tables 1-3 (and the variance statements of its text):
they are the paper's claims, not our measurements. Everything else is computed from the
result files, and every verdict by the rule stated next to it.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from stochbp.experiments import io
from stochbp.experiments.plots import _plt, _save
from stochbp.experiments.report import _fig, _header, _setting_label
from stochbp.experiments.runner import load_runs

SOURCE = ("Echraibi et al. (2020), Fourier stochastic backpropagation, Appendix B "
          "(Tables 1-3: mean ± std over 5 runs; 500 epochs on MNIST, 100 on Omniglot, "
          "batch 100, Adam 1e-4; test log-likelihood by importance sampling with 200 "
          "samples; Table 3: seconds per MNIST training epoch on an RTX 2080 Ti)")

# Table 1 (BSB = fourier) and Table 2 (CSB = fourier): test log-likelihood, mean and std.
PAPER_LOGLIK = {
    ("mnist", "sbn1"): {"rebar": (-114.14, 0.44), "relax": (-114.55, 0.48),
                        "fourier-s1": (-110.87, 0.2), "fourier-s5": (-110.70, 0.11),
                        "fourier-s10": (-110.59, 0.08)},
    ("mnist", "sbn2"): {"rebar": (-101.33, 0.04), "relax": (-101.09, 0.07),
                        "fourier-s1": (-99.74, 0.3), "fourier-s5": (-100.44, 0.28),
                        "fourier-s10": (-100.66, 0.21)},
    ("mnist", "bernoulli_vae"): {"rebar": (-127.76, 0.84), "relax": (-128.06, 2.66),
                                 "fourier-s1": (-107.4, 1.47), "fourier-s5": (-108.46, 0.37),
                                 "fourier-s10": (-109.19, 1.31)},
    ("omniglot", "sbn1"): {"rebar": (-123.66, 0.05), "relax": (-123.82, 0.17),
                           "fourier-s1": (-113.53, 0.21), "fourier-s5": (-114.34, 0.16),
                           "fourier-s10": (-114.37, 0.19)},
    ("omniglot", "sbn2"): {"rebar": (-117.81, 0.17), "relax": (-117.89, 0.04),
                           "fourier-s1": (-102.05, 0.19), "fourier-s5": (-102.16, 0.09),
                           "fourier-s10": (-102.29, 0.14)},
    ("omniglot", "bernoulli_vae"): {"rebar": (-136.83, 0.31), "relax": (-136.53, 0.32),
                                    "fourier-s1": (-126.94, 0.81),
                                    "fourier-s5": (-128.69, 0.34),
                                    "fourier-s10": (-129.48, 0.38)},
    ("mnist", "categorical_linear"): {"gumbel-softmax": (-113.46, 0.59),
                                      "fourier-s1": (-107.48, 0.37),
                                      "fourier-s5": (-107.24, 0.31),
                                      "fourier-s10": (-107.33, 0.13)},
    ("mnist", "categorical_vae"): {"gumbel-softmax": (-122.97, 5.68),
                                   "fourier-s1": (-103.49, 0.73),
                                   "fourier-s5": (-102.68, 0.63),
                                   "fourier-s10": (-101.78, 0.88)},
    ("omniglot", "categorical_linear"): {"gumbel-softmax": (-125.76, 0.24),
                                         "fourier-s1": (-122.49, 0.80),
                                         "fourier-s5": (-122.98, 0.30),
                                         "fourier-s10": (-122.98, 0.21)},
    ("omniglot", "categorical_vae"): {"gumbel-softmax": (-140.25, 1.99),
                                      "fourier-s1": (-130.20, 0.74),
                                      "fourier-s5": (-131.66, 0.84),
                                      "fourier-s10": (-131.63, 1.05)},
}
# Table 3: seconds per training epoch on MNIST (GPU).
PAPER_EPOCH_SECONDS = {
    "categorical_linear": {"gumbel-softmax": 4.11, "fourier-s1": 6.32, "fourier-s5": 10.93,
                           "fourier-s10": 16.83},
    "categorical_vae": {"gumbel-softmax": 4.13, "fourier-s1": 7.32, "fourier-s5": 13.29,
                        "fourier-s10": 21.94},
}
# Text of Appendix B: BSB's gradient log-variance (Adam moment estimates) is lower than
# REBAR's and RELAX's by "about 2 nats" for the SBNs and CSB's lower than Gumbel-softmax's
# by "1 nat" for the categorical VAE, on MNIST.
PAPER_VARIANCE_GAP = {"sbn1": 2.0, "sbn2": 2.0, "categorical_vae": 1.0}
TABLE_OF = {"sbn1": 1, "sbn2": 1, "bernoulli_vae": 1, "categorical_linear": 2,
            "categorical_vae": 2}
MODEL_NAMES = {"sbn1": "one-layer SBN", "sbn2": "two-layer SBN",
               "bernoulli_vae": "Bernoulli VAE", "categorical_linear": "one linear layer",
               "categorical_vae": "categorical VAE"}
PAPER_ORDER = ("rebar", "relax", "gumbel-softmax", "fourier-s1", "fourier-s5", "fourier-s10")
FULL_EPOCH_STEPS = {"mnist": 500, "omniglot": 243}  # training images / batch 100
VARIANCE_NATS = 0.5  # "lower variance": median log-variance at least this much lower
COLORS = {"fourier-s1": "C0", "fourier-s5": "C4", "fourier-s10": "C9", "rebar": "C1",
          "relax": "C2", "arm": "C5", "disarm": "C3", "gumbel-softmax": "C1"}


def model_key(config: dict) -> str:
    return f"sbn{config.get('layers', 1)}" if config["model"] == "sbn" else config["model"]


def _by_estimator(runs) -> dict:
    groups = defaultdict(list)
    for r in runs:
        groups[r["config"]["estimator"]].append(r)
    order = {e: i for i, e in enumerate(PAPER_ORDER + ("arm", "disarm"))}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], 99)))


def _final(run, field):
    vals = [row[field] for row in run["evals"] if field in row]
    return vals[-1] if vals else float("nan")


def _median(run, table, field):
    vals = [row[field] for row in run[table] if field in row and np.isfinite(row[field])]
    return float(np.median(vals)) if vals else float("nan")


def _mean_sd(values):
    v = np.asarray(values, float)
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return float(np.mean(v)), sd, len(v)


def _fmt(mean, sd, digits=2):
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")


def _series(runs, table, field):
    rows = [[(row["epoch"], row[field]) for row in r[table]
             if field in row and np.isfinite(row.get(field, np.nan))] for r in runs]
    n = min(len(x) for x in rows)
    if n == 0:
        return None
    x = np.array([e for e, _ in rows[0][:n]])
    y = np.array([[v for _, v in rr[:n]] for rr in rows], float)
    return x, y.mean(0), y.std(0)


def figures(out: Path) -> list:
    """ELBO, test log-likelihood and gradient log-variances against epochs (cf. paper
    Figs. 6-7), mean ± std over seeds."""
    plt = _plt()
    runs = load_runs(out)
    if not runs:
        return []
    key, dataset = model_key(runs[0]["config"]), runs[0]["config"]["dataset"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [(axes[0, 0], "steps", "train_elbo", "training ELBO (epoch mean)"),
              (axes[0, 1], "evals", "test_loglik", "test log-likelihood (IS)"),
              (axes[1, 0], "evals", "adam_log_variance",
               "log-variance, Adam moments (all parameters)"),
              (axes[1, 1], "evals", "grad_log_variance_encoder",
               "log-variance, repeated draws (encoder)")]
    for est, rs in _by_estimator(runs).items():
        for ax, table, field, _ in panels:
            s = _series(rs, table, field)
            if s is not None:
                style = "o-" if len(s[0]) < 12 else "-"
                ax.plot(s[0], s[1], style, ms=3, color=COLORS.get(est), label=est, lw=1.3)
                ax.fill_between(s[0], s[1] - s[2], s[1] + s[2], color=COLORS.get(est),
                                alpha=0.2, lw=0)
    for ax, _, _, label in panels:
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=8)
    m = io.read_json(Path(out) / "manifest.json")
    fig.suptitle(f"{MODEL_NAMES.get(key, key)}, {dataset} ({_setting_label(m)}; cf. paper "
                 "Figs. 6-7)\nmean ± std over seeds")
    return [_save(fig, out, f"{key}_{dataset}.png")]


def _verdict_diff(diff, se):
    """'agrees' / 'disagrees' / 'inconclusive' for a claimed positive difference."""
    if not np.isfinite(se):
        return "inconclusive (one seed: no error bar)"
    if diff > 2 * se:
        return "agrees"
    if diff < -2 * se:
        return "disagrees"
    return "inconclusive (within 2 standard errors)"


def report(out: Path, rel_to: Path = None) -> str:
    rel_to = rel_to or Path(out)
    runs = load_runs(out)
    m = io.read_json(Path(out) / "manifest.json")
    s = m["settings"]
    key, dataset = model_key(runs[0]["config"]), runs[0]["config"]["dataset"]
    groups = _by_estimator(runs)
    paper = PAPER_LOGLIK.get((dataset, key), {})
    epochs = max(r["evals"][-1]["epoch"] for r in runs)
    paper_epochs = {"mnist": 500, "omniglot": 100}[dataset]
    spe = runs[0]["steps"][0].get("steps_per_epoch", 0)
    lines = [f"## Appendix B: {MODEL_NAMES.get(key, key)} on {dataset} "
             f"(Table {TABLE_OF.get(key, '?')})\n", _header(out)]
    comparable = not (m["quick"] or epochs < paper_epochs
                      or s.get("train_size") is not None or s.get("test_size") is not None)
    if not comparable:
        lines.append(
            f"**Not comparable with the paper's numbers:** {epochs} "
            f"epoch{'s' if epochs != 1 else ''} of {spe} steps "
            f"on {spe * s['batch_size']} training images (the paper: {paper_epochs} epochs "
            f"on the whole training set), test on "
            f"{s.get('test_size') or 'all'} test images. The paper's values are shown "
            "beside ours for reference only; the verdicts below test the paper's "
            "*relative* claims (which estimator is better) at our training length.\n")
    lines.append(_fig(out, f"{key}_{dataset}.png", rel_to))
    M = s.get("is_samples", 200)
    lines.append(f"Ours: mean ± std over seeds of the final test log-likelihood (IS, {M} "
                 "samples) and test ELBO; the last epoch's training ELBO; the median over "
                 "evaluations of the gradient log-variance from Adam's moments (all "
                 "parameters, as in the paper) and from repeated draws (encoder only); "
                 "wall time per epoch (median, compilation excluded) and per "
                 f"{FULL_EPOCH_STEPS[dataset]}-step full epoch extrapolated from the "
                 "time per step. Paper: Table "
                 f"{TABLE_OF.get(key, '?')}, {SOURCE}.\n")
    lines.append("| estimator | seeds | test log-lik. (ours) | paper's test log-lik. | "
                 "test ELBO | train ELBO | log-var (Adam) | log-var (draws, encoder) | "
                 "s / epoch | s / full epoch |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    stats = {}
    for est, rs in groups.items():
        ll = _mean_sd([_final(r, "test_loglik") for r in rs])
        te = _mean_sd([_final(r, "test_elbo") for r in rs])
        tr = _mean_sd([r["steps"][-1]["train_elbo"] for r in rs])
        adam = float(np.median([_median(r, "evals", "adam_log_variance") for r in rs]))
        adam_enc = float(np.median([_median(r, "evals", "adam_log_variance_encoder")
                                    for r in rs]))
        direct = float(np.median([_median(r, "evals", "grad_log_variance_encoder")
                                  for r in rs]))
        secs = float(np.median([row["epoch_seconds"] for r in rs for row in r["steps"]]))
        per_step = float(np.median([row["epoch_seconds"] / row["steps_per_epoch"]
                                    for r in rs for row in r["steps"]]))
        stats[est] = {"ll": ll, "adam": adam, "adam_enc": adam_enc, "direct": direct,
                      "secs": secs,
                      "full": per_step * FULL_EPOCH_STEPS[dataset]}
        p = paper.get(est)
        lines.append(f"| {est} | {ll[2]} | {_fmt(ll[0], ll[1])} | "
                     f"{_fmt(*p) if p else '–'} | {_fmt(te[0], te[1])} | "
                     f"{_fmt(tr[0], tr[1])} | {adam:.2f} | {direct:.2f} | {secs:.2f} | "
                     f"{stats[est]['full']:.1f} |")
    for est, p in paper.items():
        if est not in groups:
            lines.append(f"| {est} (not run) | – | – | {_fmt(*p)} |" + " – |" * 6)
    lines.append("")
    lines.append("| paper's claim | our measurement | verdict |")
    lines.append("|---|---|---|")
    if comparable:  # the paper's setting: its absolute numbers are claims too
        for est, st in stats.items():
            p = paper.get(est)
            if not p:
                continue
            (mean, sd, n), (pm, psd) = st["ll"], p
            se = np.sqrt((sd ** 2 / n if np.isfinite(sd) else 0.0) + psd ** 2 / 5)
            tol = max(1.0, 2 * se)
            lines.append(f"| Table {TABLE_OF.get(key)}: {est} reaches a test log-likelihood "
                         f"of {pm:.2f} ± {psd:.2f} (5 runs) in this setting; rule: ours "
                         f"within max(1 nat, 2 s.e. of the difference) | ours "
                         f"{mean:.2f} ({n} seed{'s' if n != 1 else ''}), difference "
                         f"{mean - pm:+.2f} nats | "
                         f"{'agrees' if abs(mean - pm) <= tol else 'disagrees'} |")
    baselines = [e for e in stats if not e.startswith("fourier")
                 and e in ("rebar", "relax", "gumbel-softmax")]
    fouriers = [e for e in stats if e.startswith("fourier")]
    if "fourier-s1" in stats and baselines:
        best = max(baselines, key=lambda e: stats[e]["ll"][0])
        f1, b = stats["fourier-s1"]["ll"], stats[best]["ll"]
        diff = f1[0] - b[0]
        se = np.sqrt(f1[1] ** 2 / f1[2] + b[1] ** 2 / b[2])
        pf, pb = paper.get("fourier-s1"), paper.get(best)
        claimed = f"{pf[0] - pb[0]:+.2f}" if pf and pb else "?"
        lines.append(f"| Table {TABLE_OF.get(key)}: Fourier (S=1) has a higher test "
                     f"log-likelihood than {best}, the best baseline here (paper: "
                     f"{claimed} nats); rule: difference beyond 2 standard errors | "
                     f"fourier-s1 minus {best}: {diff:+.2f} nats (s.e. {se:.2f}) | "
                     f"{_verdict_diff(diff, se)} |")
    if "fourier-s1" in stats and len(fouriers) > 1:
        others = [e for e in fouriers if e != "fourier-s1"]
        best = max(others, key=lambda e: stats[e]["ll"][0])
        f1, b = stats["fourier-s1"]["ll"], stats[best]["ll"]
        diff = f1[0] - b[0]
        se = np.sqrt(f1[1] ** 2 / f1[2] + b[1] ** 2 / b[2])
        tol = max(1.0, 2 * se) if np.isfinite(se) else 1.0
        lines.append(f"| 'using a single sample does not hurt performance' (rule: S=1 at "
                     f"most max(1 nat, 2 s.e.) below the best S) | fourier-s1 minus {best}:"
                     f" {diff:+.2f} nats | {'agrees' if diff >= -tol else 'disagrees'} |")
    if "fourier-s1" in stats and baselines:
        for field, label in (("adam", "Adam moments, all parameters"),
                             ("adam_enc", "Adam moments, encoder"),
                             ("direct", "repeated draws, encoder")):
            best = min(baselines, key=lambda e: stats[e][field])
            diff = stats["fourier-s1"][field] - stats[best][field]
            gap = PAPER_VARIANCE_GAP.get(key) if dataset == "mnist" else None
            claim = (f"about {gap:g} nat{'s' if gap != 1 else ''} lower than the "
                     "baselines" if gap else
                     "lower (the paper states a size only for the SBNs and the "
                     "categorical VAE on MNIST)")
            verdict = ("agrees" if diff <= -VARIANCE_NATS else "disagrees" if diff >= 0
                       else "partly (lower by less than 0.5 nats)")
            lines.append(f"| Fourier's gradient log-variance is {claim}; rule: median "
                         f"log-variance at least {VARIANCE_NATS} nats below the lowest "
                         f"baseline ({label}) | fourier-s1 minus {best}: {diff:+.2f} nats | "
                         f"{verdict} |")
    if key in PAPER_EPOCH_SECONDS and "gumbel-softmax" in stats:
        p3 = PAPER_EPOCH_SECONDS[key]
        gs = stats["gumbel-softmax"]["secs"]
        parts, ours_ratio = [], {}
        for est in fouriers:
            ours_ratio[est] = stats[est]["secs"] / gs
            paper_ratio = (f" (paper {p3[est] / p3['gumbel-softmax']:.1f}x)" if est in p3
                           else "")
            parts.append(f"{est}: {ours_ratio[est]:.1f}x{paper_ratio}")
        faster = all(r > 1 for r in ours_ratio.values())
        lines.append(f"| Table 3: Gumbel-softmax is faster per epoch than Fourier (paper, "
                     f"GPU: {p3['gumbel-softmax']} s vs {p3['fourier-s1']} s for S=1) | "
                     f"time per epoch relative to gumbel-softmax ({gs:.2f} s here, CPU): "
                     f"{'; '.join(parts)} | {'agrees' if faster else 'disagrees'} "
                     "(our ratios are CPU ratios: see the note) |")
        lines.append("")
        lines.append("Table 3 side by side (seconds per epoch; ours measured on "
                     f"{spe}-step epochs and extrapolated to the full "
                     f"{FULL_EPOCH_STEPS[dataset]}-step epoch, on this machine's CPU; the "
                     "paper's on a GPU, where the small Gumbel-softmax step is "
                     "latency-bound -- on a CPU time follows arithmetic, and the Fourier "
                     "rule needs the decoder at n d K = 20 000 substituted latents per "
                     "step, so the CPU ratio is necessarily larger):\n")
        lines.append("| estimator | paper (GPU) s / epoch | ours s / full epoch | "
                     "ours relative to gumbel-softmax | paper relative |")
        lines.append("|---|---|---|---|---|")
        for est in ("gumbel-softmax", "fourier-s1", "fourier-s5", "fourier-s10"):
            ours = stats.get(est)
            mine = (f"{ours['full']:.1f} | {ours['secs'] / gs:.1f}x" if ours else "– | –")
            lines.append(f"| {est} | {p3[est]:.2f} | {mine} | "
                         f"{p3[est] / p3['gumbel-softmax']:.1f}x |")
    lines.append("")
    return "\n".join(lines)
