"""The `stochbp` command line: `demo`, `run EXPERIMENT`, `report RESULTS_DIR`.

`run` and `report` need the optional dependencies of the experiments (the
`experiments` extra); they are imported only when one of those commands runs, and a
missing one is reported in one line with the command that installs them.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

# module -> distribution, of the `experiments` extra
EXPERIMENTS_EXTRA = {"optax": "optax", "matplotlib": "matplotlib",
                     "sklearn": "scikit-learn", "tqdm": "tqdm"}
INSTALL_EXTRA = "pip install 'stochbp[experiments]'"


def _require_experiments_extra(command: str) -> None:
    from stochbp.experiments.errors import UsageError
    missing = [dist for module, dist in EXPERIMENTS_EXTRA.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f"`stochbp {command}` needs the experiments extra (missing: "
                         f"{', '.join(missing)}); install it with: {INSTALL_EXTRA}")


def _demo(args) -> int:
    from stochbp.experiments.errors import UsageError
    for flag, value in (("--draws", args.draws), ("--samples", args.samples)):
        if value < 2:  # a standard error needs 2 draws, a leave-one-out baseline 2 samples
            raise UsageError(f"{flag} must be at least 2; got {flag} {value}")
    import jax
    jax.config.update("jax_enable_x64", True)
    from stochbp import demo
    demo.run(num_draws=args.draws, num_samples=args.samples, seed=args.seed)
    return 0


def _parse_seeds(text: str, quick: bool) -> list:
    from stochbp.experiments import UsageError
    if text is None:
        return list(range(2 if quick else 5))
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise UsageError(f"--seeds must be a count (5) or a comma list (0,3,7); got {text!r}")
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must name at least one non-negative seed; got {text!r}")
    return seeds


def _parse_estimators(text: str, valid: tuple, default: tuple = None) -> list:
    """Estimator labels (labels.py; an earlier version's label is accepted and renamed)."""
    from stochbp.experiments import UsageError, labels
    if text is None:
        return list(default or valid)
    names = [labels.canonical(s.strip()) for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UsageError(f"unknown estimator(s) {bad or text!r}; valid estimators for this "
                         f"experiment: {', '.join(valid)}")
    return names


def _parse_overrides(items: list) -> dict:
    """--set KEY=VALUE, VALUE parsed as JSON (numbers, lists, true/false) or a string."""
    import json

    from stochbp.experiments import UsageError
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# experiment-declared options: CLI flag -> setting of the same name
OPTIONS = {"dataset": "--dataset", "layers": "--layers", "data_dir": "--data-dir"}


def _option_settings(args, exp) -> dict:
    """Settings given by --dataset / --layers / --data-dir, for an experiment that
    declares them (``exp.options``)."""
    from stochbp.experiments import UsageError
    accepted = tuple(exp.options)
    given = {name: getattr(args, name) for name in OPTIONS
             if getattr(args, name, None) is not None}
    if "data_dir" in given:
        given["data_dir"] = str(Path(given["data_dir"]).expanduser().resolve())
    bad = [OPTIONS[name] for name in given if name not in accepted]
    if bad:
        valid = ", ".join(OPTIONS[n] for n in accepted) or "none"
        raise UsageError(f"{', '.join(bad)} is not an option of experiment {exp.name!r} "
                         f"(its options: {valid})")
    clash = sorted(set(given) & set(_parse_overrides(args.set)))
    if clash:
        raise UsageError(f"setting(s) {clash} given both as an option and with --set")
    return given


def _read_manifest(out: Path):
    """The manifest of the run that ``--resume`` continues, or None where ``out`` has
    none (the runner then says why there is nothing to resume)."""
    import json

    from stochbp.experiments import UsageError
    from stochbp.experiments.runner import check_labels
    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"--resume: {path} is damaged ({err}); it records the run's "
                         "settings, so start again in another --out") from None
    if isinstance(manifest, dict):
        check_labels(out, manifest)
    fields = {"experiment": str, "quick": bool, "settings": dict, "seeds": list,
              "estimators": list}
    bad = [k for k, t in fields.items()
           if not isinstance(manifest, dict) or not isinstance(manifest.get(k), t)]
    if bad:
        raise UsageError(f"--resume: {path} is not a stochbp manifest (missing or "
                         f"malformed: {', '.join(bad)}); start again in another --out")
    return manifest


def _resumed(args, exp, out: Path, given: dict):
    """(quick, seeds, estimators, settings overrides) of ``stochbp run --resume``: what
    the manifest of ``out`` records, so that none of --quick, --seeds, --estimators,
    --set or the experiment's options need to be given again. A value given again
    must agree with the manifest; one that does not is refused, naming the setting and
    both values. Without a manifest: what the command line gives (None)."""
    from stochbp.experiments import UsageError
    from stochbp.experiments.runner import resolve_settings
    old = _read_manifest(out) if args.resume else None
    if old is None:
        return None
    if old["experiment"] != exp.name:
        raise UsageError(f"--resume: {out} holds a {old['experiment']!r} run, not "
                         f"{exp.name!r}: run `stochbp run {old['experiment']} --out {out} "
                         "--resume`")
    quick = old["quick"]
    if args.quick and not quick:
        raise UsageError(f"--resume: {out} was started without --quick; leave --quick out "
                         "to continue it")
    keep = "leave it out to continue with the recorded value, or start again in another --out"
    seeds = old["seeds"]
    if args.seeds is not None and _parse_seeds(args.seeds, quick) != seeds:
        raise UsageError(f"--resume: {out} was started with seeds {seeds}, not --seeds "
                         f"{args.seeds} ({_parse_seeds(args.seeds, quick)}); {keep}")
    estimators = old["estimators"]
    if args.estimators is not None:
        asked = _parse_estimators(args.estimators, exp.estimator_names)
        if sorted(asked) != sorted(estimators):
            raise UsageError(f"--resume: {out} was started with estimators "
                             f"{','.join(estimators)}, not --estimators {','.join(asked)}; "
                             f"{keep}")
    try:
        recorded = resolve_settings(exp, quick, old["settings"])
    except UsageError as err:
        raise UsageError(f"--resume: {out / 'manifest.json'} records settings this "
                         f"version does not accept ({err}); finish the run with the "
                         "version that started it, or start again in another --out") \
            from None
    asked = resolve_settings(exp, quick, {**old["settings"], **given}).to_dict()
    then = recorded.to_dict()
    for name in given:
        if asked[name] != then[name]:
            flag = OPTIONS[name] if name in OPTIONS and getattr(args, name, None) is not None \
                else "--set"
            raise UsageError(f"--resume: {out} was started with {name}={then[name]!r}, not "
                             f"{name}={asked[name]!r} ({flag}); {keep}")
    return quick, seeds, estimators, old["settings"]


def _option_error(err, options: dict):
    """A setting error about a value given by an option: name the option."""
    from stochbp.experiments import UsageError
    flag = OPTIONS.get(err.name)
    if err.name in options and err.requirement is not None:
        return UsageError(f"{flag} must be {err.requirement}; got {err.name}={err.value!r}")
    return err


def _run(args) -> int:
    _require_experiments_extra("run")
    from stochbp import experiments
    from stochbp.experiments.runner import run_experiment
    exp = experiments.get(args.experiment)
    out = Path(args.out or Path("results") / exp.name)
    options = _option_settings(args, exp)
    given = {**options, **_parse_overrides(args.set)}
    try:
        resumed = _resumed(args, exp, out, given)
        if resumed is not None:
            quick, seeds, estimators, overrides = resumed
        else:
            quick, overrides = args.quick, given
            seeds = _parse_seeds(args.seeds, quick)
            estimators = _parse_estimators(args.estimators, exp.estimator_names,
                                           exp.quick_estimators if quick else None)
        command = "stochbp " + " ".join(shlex.quote(a) for a in args.argv)
        log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        run_experiment(exp, out, quick=quick, seeds=seeds, estimators=estimators,
                       resume=args.resume, command=command, progress=not args.quiet,
                       log=log, overrides=overrides, devices=args.devices)
    except experiments.SettingError as err:
        raise _option_error(err, options) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs and checkpoints are in {out}; continue with "
              f"`stochbp run {exp.name} --out {shlex.quote(str(out))} --resume`",
              file=sys.stderr)
        return 130
    print(f"results in {out}; make the report with: stochbp report {out}")
    return 0


def _report(args) -> int:
    _require_experiments_extra("report")
    from stochbp.experiments.reporting import write_report
    path = write_report(Path(args.results))
    print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stochbp", description="stochastic backpropagation:"
                                     " demo, paper experiments and reports")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="every estimator beside the exact gradient, on "
                                       "small problems of every distribution family")
    demo.add_argument("--draws", type=int, default=400, help="gradient estimates per row")
    demo.add_argument("--samples", type=int, default=4, help="samples per estimate")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="run one of the paper's experiments")
    run.add_argument("experiment", help="gamma-toy, laplace-blr (Section 6), sbn, "
                     "bernoulli-vae, categorical-linear, categorical-vae (Appendix B)")
    run.add_argument("--quick", action="store_true",
                     help="a few minutes on 2 CPU cores (default: the paper's setting)")
    run.add_argument("--seeds", help="number of seeds (default 5, quick 2) or a comma list")
    run.add_argument("--out", help="results directory (default results/EXPERIMENT); an "
                                   "existing non-empty one is refused unless --resume")
    run.add_argument("--estimators", help="comma-separated subset of the experiment's "
                                          "estimators (default: all; under --quick the "
                                          "Appendix B experiments run fourier-s1 and "
                                          "their paper baselines); labels: the stochbp "
                                          "estimator's name, with -sS for S samples or "
                                          "-nN for N Fourier terms")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out from its checkpoints, "
                          "with the settings, seeds and estimators its manifest.json "
                          "records (options given again must agree with them)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override one setting (repeatable), e.g. --set steps=500 "
                          "--set dims=[1,10]; recorded in every result file")
    run.add_argument("--dataset", help="mnist or omniglot (Appendix B experiments; "
                                       "default mnist)")
    run.add_argument("--layers", type=int, help="stochastic layers of the sbn: 1 or 2 "
                                                "(default 1)")
    run.add_argument("--data-dir", dest="data_dir",
                     help="folder holding binarized_mnist.npz / omniglot28.npz (default: "
                          "$STOCHBP_DATA_DIR, else the cache, else a download)")
    run.add_argument("--devices", type=int, help="devices to split each training batch "
                     "over (data parallel, jax.sharding; default: all JAX sees, or the "
                     "largest count that divides the batch size when they do not, or on "
                     "--resume the count the run started with)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="figures and a Markdown report for a results "
                                        "directory (one experiment or a folder of them)")
    rep.add_argument("results")
    rep.set_defaults(func=_report)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from stochbp.experiments.errors import UsageError
    try:
        return args.func(args)
    except UsageError as err:
        print(f"stochbp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `run` says how to resume; `report` and `demo` stop
        print("\nstochbp: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # unwritable --out, a file where a folder should be, full disk
        where = f" {err.filename}" if err.filename else ""
        print(f"stochbp: error: cannot write{where}: {err.strerror or err}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
