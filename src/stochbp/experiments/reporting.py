"""What every experiment's figures and report section share: reading a results
directory, grouping runs and averaging over seeds, saving figures, the Markdown pieces
(header, figure links, claim tables) and :func:`write_report`, which assembles the
sections of one or several experiments into ``report.md``.

matplotlib is imported only by :func:`pyplot`, when a figure is drawn.
"""
from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
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
    """Every sound finished run of a results directory (``runs/*.json``, or compressed
    ``runs/*.json.gz``), its estimator label in the current scheme
    (:func:`stochbp.experiments.labels.canonical`). Damaged files are skipped with a
    warning naming the file (``warn``, default: stderr)."""
    warn = warn or (lambda msg: print(f"stochbp: warning: {msg}", file=sys.stderr))
    runs = []
    paths = [*(Path(out) / "runs").glob("*.json"), *(Path(out) / "runs").glob("*.json.gz")]
    for p in sorted(paths):
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
# One convention in every report and figure: std is the sample standard deviation over
# seeds (ddof = 1, undefined for one seed), s.e. = std / sqrt(n).
STD_NOTE = ("std: sample standard deviation over seeds (ddof = 1); s.e.: std / sqrt(n), "
            "which with 2 seeds rests on one degree of freedom, so a 2-s.e. rule is then "
            "loose; a value from one seed is printed alone (n = 1)")
SIGNIFICANT_SE = 2  # a difference is resolved when it lies beyond this many s.e.


def seed_stats(values):
    """(mean, std with ddof = 1 (nan for one value), n) of per-seed values."""
    v = np.asarray(values, dtype=float)
    sd = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    return float(np.mean(v)), sd, int(v.size)


def mean_std_text(values, digits: int = 4) -> str:
    """'mean ± std' (ddof = 1) to ``digits`` and 2 significant digits; one value alone."""
    mean, sd, n = seed_stats(values)
    if n < 2:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {sd:.2g}"


def difference(a, b):
    """Mean of the per-seed values a minus that of b, and its standard error (nan if
    either side has one seed: then no verdict can rest on it)."""
    (ma, sa, na), (mb, sb, nb) = seed_stats(a), seed_stats(b)
    return ma - mb, float(np.sqrt(sa ** 2 / na + sb ** 2 / nb))


ONE_SEED = "inconclusive (one seed: no error bar)"


def exceeds_verdict(diff: float, se: float, margin: float = 0.0) -> str:
    """Verdict on a claim 'diff > margin' (margin 0: the sign only; a positive margin:
    at least that size). agrees when diff - 2 s.e. > margin, disagrees when
    diff + 2 s.e. < margin, inconclusive in between or with one seed (se nan)."""
    if not np.isfinite(se):
        return ONE_SEED
    if diff - SIGNIFICANT_SE * se > margin:
        return "agrees"
    if diff + SIGNIFICANT_SE * se < margin:
        return "disagrees"
    return f"inconclusive (within {SIGNIFICANT_SE} s.e. of {margin:g})"


def about_verdict(diff: float, se: float, size: float) -> str:
    """Verdict on 'diff is about ``size``', read as within a factor 2 of it: agrees when
    diff ± 2 s.e. lies inside [size / 2, 2 size], disagrees when it lies wholly outside,
    inconclusive otherwise or with one seed."""
    if not np.isfinite(se):
        return ONE_SEED
    lo, hi = diff - SIGNIFICANT_SE * se, diff + SIGNIFICANT_SE * se
    if size / 2 <= lo and hi <= 2 * size:
        return "agrees"
    if hi < size / 2 or lo > 2 * size:
        return "disagrees"
    return f"inconclusive ({lo:.2f} to {hi:.2f} overlaps the edge of [{size / 2:g}, {2 * size:g}])"


def combine(verdicts) -> str:
    """One verdict from several cases: 'agrees' / 'disagrees' when all cases say so,
    'inconclusive' when none is resolved, else 'partly (...)' with the counts."""
    verdicts = list(verdicts)
    heads = [v.split(" ")[0] for v in verdicts]
    a, d, n = heads.count("agrees"), heads.count("disagrees"), len(heads)
    if a == n:
        return "agrees"
    if d == n:
        return "disagrees"
    if a == d == 0:
        return "inconclusive" if "no" not in heads else "no verdict"
    return f"partly ({a} of {n} cases agree, {d} disagree, {n - a - d} unresolved)"


def series(runs, table: str, field: str):
    """(x = step, mean, std (ddof = 1; None for one run)) over seeds of ``field`` in each
    run's ``table`` rows ("steps" or "evals"), truncated to the shortest run."""
    rows = [[row for row in r[table] if field in row] for r in runs]
    n = min(len(x) for x in rows)
    x = np.array([row["step"] for row in rows[0][:n]])
    y = np.array([[row[field] for row in rr[:n]] for rr in rows], dtype=float)
    std = np.nanstd(y, 0, ddof=1) if len(runs) > 1 else None
    return x, np.nanmean(y, 0), std


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


def seeds_note(runs) -> str:
    """'mean ± std over n seeds' when every group has several seeds, else what holds."""
    n = sorted({len(rs) for rs in runs})
    if n == [1]:
        return "one seed (n = 1): no spread shown"
    if n[0] > 1:
        return f"mean ± std over {'/'.join(map(str, n))} seeds"
    return "mean ± std over seeds where there are several; one-seed curves alone"


# ------------------------------------------------------------------ the grid
NO_VERDICT = "no verdict"


@dataclasses.dataclass(frozen=True)
class Grid:
    """The runs a results directory's manifest asks for, and which of them finished.

    ``expected``: (run_id, config) of every run of the grid (config estimators in the
    current label scheme); ``finished``: the run_ids with sound result files."""

    expected: tuple
    finished: frozenset

    def count(self, **where) -> tuple:
        """(finished, expected) runs whose config matches ``where`` (a value may be a
        tuple of accepted values)."""
        def match(config):
            return all(config.get(k) in (v if isinstance(v, (tuple, list, set)) else (v,))
                       for k, v in where.items())
        ids = [rid for rid, config in self.expected if match(config)]
        return sum(rid in self.finished for rid in ids), len(ids)

    def complete(self, **where) -> bool:
        done, total = self.count(**where)
        return done == total

    def status(self, **where) -> str:
        done, total = self.count(**where)
        return f"{done} of {total} runs finished"

    def no_verdict(self, **where) -> str:
        """The verdict cell of a comparison some of whose runs are missing."""
        return f"{NO_VERDICT} ({self.status(**where)} for this comparison)"


def grid(out: Path, runs=None) -> Grid:
    """The grid of ``out``'s manifest, rebuilt with the experiment's own ``runs``; the
    finished runs are those :func:`load_runs` accepts."""
    from stochbp import experiments
    m = read_manifest(out)
    runs = load_runs(out, warn=lambda msg: None) if runs is None else runs
    finished = frozenset(r["run_id"] for r in runs)
    try:
        exp = experiments.get(m["experiment"])
        preset = exp.settings(m.get("quick", False))
        known = {k: v for k, v in m["settings"].items() if k in preset.names()}
        specs = exp.runs(preset.replace(**known), m["estimators"], m["seeds"])
        expected = tuple((s.run_id, dict(s.config, estimator=labels.canonical(
            s.config["estimator"])) if "estimator" in s.config else s.config)
            for s in specs)
    except (KeyError, ValueError, TypeError, UsageError):
        expected = tuple((r["run_id"], r["config"]) for r in runs)
    return Grid(expected, finished)


# ------------------------------------------------------------------ figures
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def band(ax, x, mean, std, label, color, **style) -> None:
    """A mean curve with a shaded ± std band (no band when std is None: one seed)."""
    ax.plot(x, mean, label=label, color=color, lw=style.pop("lw", 1.3), **style)
    if std is not None:
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


def _cell(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def settings_table(manifest: dict) -> list:
    """The settings as a Markdown table: value, the paper preset's value (where it
    differs) and what the setting is."""
    from stochbp import experiments
    settings = manifest["settings"]
    try:
        paper = experiments.get(manifest["experiment"]).settings(False)
        defaults = paper.to_dict()
        docs = {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(paper)}
    except (KeyError, ValueError, UsageError):
        defaults, docs = {}, {}
    lines = ["| setting | value here | paper preset | what it is |", "|---|---|---|---|"]
    for key in sorted(settings):
        here = settings[key]
        preset = ("–" if key not in defaults else "same" if defaults[key] == here
                  else _cell(defaults[key]))
        lines.append(f"| {key} | {_cell(here)} | {preset} | {docs.get(key, '')} |")
    return lines


def choices_table(choices) -> list:
    """What the paper leaves open and we chose: rows of (choice, ours, where in the code)."""
    lines = [f"{CHOICES_TITLE} (each checked against the code named):\n",
             "| what | our choice | where |", "|---|---|---|"]
    lines += [f"| {_cell(what)} | {_cell(ours)} | `{where}` |" for what, ours, where in choices]
    return lines + [""]


def header(out: Path, choices=(), data: str = "") -> str:
    """The part under a section's title: preset, seeds, estimators, how many runs of
    the grid finished, versions and the command that produced the results, then the
    settings table, the data used and the table of our choices."""
    m = read_manifest(out)
    v = m["versions"]
    g = grid(out)
    done, total = g.count()
    lines = [f"Results `{Path(out).name}/` (preset: {setting_label(m)}). Seeds "
             f"{', '.join(map(str, m['seeds']))} (n = {len(m['seeds'])}); estimators "
             f"{', '.join(labels.canonical(e) for e in m['estimators'])}; {done} of "
             f"{total} runs finished. Versions: jax {v['jax']}, numpyro "
             f"{v['numpyro']}, optax {v['optax']}, stochbp {v['stochbp']}, python "
             f"{v['python']}, backend {v['backend']}, precision "
             f"{m.get('precision', 'float32')}. Command: `{m.get('command', '')}`.\n"]
    if done < total:
        lines.append(f"**Incomplete grid: {done} of {total} runs finished.** Tables show "
                     "what finished; a comparison that lacks any of its runs gets no "
                     "verdict.\n")
    if data:
        lines.append(f"Data: {data}\n")
    lines += settings_table(m) + [""]
    if choices:
        lines += choices_table(choices)
    return "\n".join(lines)


def figure_link(out: Path, name: str, rel_to: Path) -> str:
    """A Markdown image of ``out/figures/name`` relative to ``rel_to`` ('' if absent)."""
    path = Path(out) / "figures" / name
    return f"![{name}]({path.relative_to(rel_to)})\n" if path.exists() else ""


# ------------------------------------------------------------------ the report
TITLE = "# stochbp: reproduction of Fourier Stochastic Backpropagation\n"
INTRODUCTION = ("Each section compares our runs with the claims of Echraibi et al. (2020). "
                "Verdicts are computed from the result files by the rule stated in the "
                "table; where we disagree with the paper we say so. Throughout: std is the "
                "sample standard deviation over seeds (ddof = 1) and s.e. = std / sqrt(n); "
                "a difference counts only beyond 2 s.e.; where the paper states a size, "
                "the difference's ±2 s.e. interval is tested against it, not only its "
                "sign; a comparison resting on one seed is inconclusive; a comparison "
                "whose runs have not all finished gets no verdict, and each section's "
                "header says how many of its runs finished.\n")


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


CHOICES_TITLE = "Choices the paper does not fix, and ours"


def _once(section: str, seen: set) -> str:
    """The section with a choices table already shown in an earlier section of the same
    report replaced by a pointer to it."""
    start = section.find(CHOICES_TITLE)
    if start < 0:
        return section
    end = section.find("\n\n", section.find("| what | our choice |", start))
    block = section[start:end]
    if block in seen:
        return section[:start] + f"{CHOICES_TITLE}: as in the table above." + section[end:]
    seen.add(block)
    return section


def write_report(results: Path) -> Path:
    """Figures and report.md for one experiment directory or a directory of them."""
    from stochbp import experiments
    results = Path(results)
    sections, seen = [TITLE, INTRODUCTION], set()
    for d in result_dirs(results):
        exp = experiments.get(read_manifest(d)["experiment"])
        if not load_runs(d, warn=lambda msg: None):
            sections.append(f"## {exp.name}\n\nNo finished runs in {d}.\n")
            continue
        exp.figures(d)
        sections.append(_once(exp.report(d, results), seen))
    path = results / "report.md"
    io.atomic_write_bytes(path, "\n".join(sections).encode())
    return path
