"""What every experiment's figures and report section share: reading a results
directory, grouping runs and averaging over seeds, saving figures, the Markdown pieces
(header, figure links, claim tables) and :func:`write_report`, which assembles the
sections of one or several experiments into ``report.md``.

matplotlib is imported only by :func:`pyplot`, when a figure is drawn.
"""
from __future__ import annotations

from collections import defaultdict
import sys
from pathlib import Path

import numpy as np

from stochbp.experiments import io, labels
from stochbp.experiments.errors import UsageError

FIGURE_DPI = 110
# header of the table every report section ends with: one row per claim of the paper,
# our measurement, and the verdict computed by the rule the row states
CLAIMS_HEADER = ["| paper's claim | our measurement | verdict |", "|---|---|---|"]


# ------------------------------------------------------------------ results directory
def read_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    try:
        manifest = io.read_json(path)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: missing or damaged ({err}); is {out} a stochbp "
                         "results folder?") from None
    fields = {"experiment": str, "quick": bool, "settings": dict, "seeds": list,
              "estimators": list, "versions": dict}
    missing = [k for k, t in fields.items()
               if not isinstance(manifest, dict) or not isinstance(manifest.get(k), t)]
    if missing:
        raise UsageError(f"{path}: not a stochbp manifest (missing or malformed: "
                         f"{', '.join(missing)})")
    for k in ("python", "jax", "numpyro", "optax", "stochbp", "backend"):
        manifest["versions"].setdefault(k, "unknown")
    return manifest


def load_runs(out: Path, warn=None) -> list[dict]:
    """Every sound finished run of a results directory, its estimator label in the
    current scheme (:func:`stochbp.experiments.labels.canonical`). Damaged files are
    skipped with a warning naming the file (``warn``, default: stderr)."""
    warn = warn or (lambda msg: print(f"stochbp: warning: {msg}", file=sys.stderr))
    runs = []
    for p in sorted((Path(out) / "runs").glob("*.json")):
        try:
            runs.append(io.check_run(p))
        except io.DamagedFile as err:
            warn(f"{err}; left out of the report (stochbp run ... --resume recomputes it)")
    for run in runs:
        if "estimator" in run["config"]:
            run["config"]["estimator"] = labels.canonical(run["config"]["estimator"])
    return runs


def grouped(runs, keys) -> dict:
    """{(config[k] for k in keys): [runs]} in order of first appearance."""
    groups = defaultdict(list)
    for r in runs:
        groups[tuple(r["config"][k] for k in keys)].append(r)
    return groups


# ------------------------------------------------------------------ statistics over seeds
def series(runs, table: str, field: str):
    """(x = step, mean, std) over seeds of ``field`` in each run's ``table`` rows
    ("steps" or "evals"), truncated to the shortest run."""
    rows = [[row for row in r[table] if field in row] for r in runs]
    n = min(len(x) for x in rows)
    x = np.array([row["step"] for row in rows[0][:n]])
    y = np.array([[row[field] for row in rr[:n]] for rr in rows], dtype=float)
    return x, np.nanmean(y, 0), np.nanstd(y, 0)


def mean_std_text(values) -> str:
    """'mean ± std' (population std) of values, 4 and 2 significant digits."""
    values = np.asarray(values, dtype=float)
    return f"{np.mean(values):.4g} ± {np.std(values):.2g}"


def run_average(run, table: str, field: str) -> float:
    """Mean of a metric over a whole run: for a loss, lower means faster descent."""
    return float(np.mean([row[field] for row in run[table] if field in row]))


def median_eval(run, field: str, skip_first: bool = True) -> float:
    """Median of an evaluation metric over a run, without the evaluation at step 0."""
    vals = [row[field] for row in run["evals"] if field in row]
    vals = vals[1:] if skip_first and len(vals) > 1 else vals
    return float(np.median(vals))


def share_verdict(hits: int, total: int, partly: str) -> str:
    """'agrees' when every case satisfies the rule, 'disagrees' when none does, else
    ``partly``."""
    return "agrees" if hits == total else "disagrees" if hits == 0 else partly


# ------------------------------------------------------------------ figures
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def band(ax, x, mean, std, label, color) -> None:
    """A mean curve with a shaded ± std band."""
    ax.plot(x, mean, label=label, color=color, lw=1.3)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def save_figure(fig, out: Path, name: str) -> Path:
    """Write ``fig`` to ``out/figures/name`` atomically and close it."""
    path = Path(out) / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches="tight")
    tmp.replace(path)
    pyplot().close(fig)
    return path


# ------------------------------------------------------------------ Markdown pieces
def setting_label(manifest: dict) -> str:
    """'quick' or 'paper', plus the settings that differ from that preset's defaults."""
    from stochbp import experiments
    preset = "quick" if manifest["quick"] else "paper"
    try:
        defaults = experiments.get(manifest["experiment"]).settings(
            manifest["quick"]).to_dict()
    except (KeyError, ValueError, UsageError):
        return preset
    settings = manifest["settings"]
    changed = [f"{k}={settings[k]!r}" for k in sorted(settings)
               if k in defaults and settings[k] != defaults[k] and k != "data_dir"]
    return f"{preset}, changed: {', '.join(changed)}" if changed else preset


def header(out: Path) -> str:
    """The paragraph under a section's title: settings, seeds, estimators, versions and
    the command that produced the results."""
    m = read_manifest(out)
    v = m["versions"]
    return (f"Results `{Path(out).name}/`. "
            f"Settings ({setting_label(m)}): `{m['settings']}`; seeds "
            f"{m['seeds']}; estimators {m['estimators']}. Versions: jax {v['jax']}, numpyro "
            f"{v['numpyro']}, optax {v['optax']}, stochbp {v['stochbp']}, python "
            f"{v['python']}, backend {v['backend']}. Command: `{m.get('command', '')}`.\n")


def figure_link(out: Path, name: str, rel_to: Path) -> str:
    """A Markdown image of ``out/figures/name`` relative to ``rel_to`` ('' if absent)."""
    path = Path(out) / "figures" / name
    return f"![{name}]({path.relative_to(rel_to)})\n" if path.exists() else ""


# ------------------------------------------------------------------ the report
TITLE = "# stochbp: reproduction of Fourier Stochastic Backpropagation\n"
INTRODUCTION = ("Each section compares our runs with the claims of Echraibi et al. (2020). "
                "Verdicts are computed from the result files by the rule stated in the "
                "table; where we disagree with the paper we say so.\n")


def result_dirs(results: Path) -> list:
    """``results`` itself if it is one experiment's directory, else its subdirectories
    that are."""
    results = Path(results)
    if not results.is_dir():
        raise UsageError(f"{results} is not a directory of stochbp results")
    dirs = [results] if (results / "manifest.json").exists() else sorted(
        p for p in results.iterdir() if (p / "manifest.json").exists())
    if not dirs:
        raise UsageError(f"{results} holds no stochbp results (no manifest.json found)")
    return dirs


def write_report(results: Path) -> Path:
    """Figures and report.md for one experiment directory or a directory of them."""
    from stochbp import experiments
    results = Path(results)
    sections = [TITLE, INTRODUCTION]
    for d in result_dirs(results):
        exp = experiments.get(read_manifest(d)["experiment"])
        if not list((d / "runs").glob("*.json")):
            sections.append(f"## {exp.name}\n\nNo finished runs in {d}.\n")
            continue
        exp.figures(d)
        sections.append(exp.report(d, results))
    path = results / "report.md"
    io.atomic_write_bytes(path, "\n".join(sections).encode())
    return path
