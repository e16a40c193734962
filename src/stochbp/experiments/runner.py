"""Run an experiment's grid of runs with checkpoints, resumption and atomic results.

Layout of a results directory::

    manifest.json            experiment, settings, seeds, estimators, versions, command
    runs/<run_id>.json       one finished run: config, per-step and per-eval metrics
    runs/<run_id>.csv        the same metrics as CSV (per-step rows, then per-eval rows)
    checkpoints/<run_id>.pkl latest state of an unfinished run (deleted when it finishes)
    analysis/*.json          experiment-level analyses run after the grid
    figures/*.png            written by ``stochbp report``

A run is data parallel over a mesh of ``devices`` devices (:mod:`parallel`: each
step's minibatch split over the devices, parameters replicated); the manifest records
the mesh, and a run resumes only on as many devices as it started on (with
``devices=None`` a resumed run takes the manifest's count). With several processes
(``jax.distributed``) process 0 alone writes.

A run advances in chunks of ``eval_every`` steps; after each chunk it evaluates and
writes its checkpoint atomically. Random keys are derived from (seed, step), so a run
resumed from a checkpoint reaches the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from stochbp.experiments import io, labels, parallel
from stochbp.experiments.errors import UsageError
from stochbp.experiments.settings import Settings, SettingError


@dataclasses.dataclass(frozen=True)
class RunSpec:
    run_id: str
    config: dict


@dataclasses.dataclass
class Experiment:
    """What the runner needs from an experiment (see gamma_toy.py, laplace_blr.py)."""

    name: str
    description: str
    estimator_names: tuple  # valid --estimators values (labels.py), in default order
    settings: Callable[[bool], Settings]  # quick -> the preset's validated settings
    runs: Callable[[Settings, list, list], list]  # settings, estimators, seeds -> [RunSpec]
    init: Callable[[RunSpec, Settings], Any]  # -> state (a pytree)
    advance: Callable[[RunSpec, Settings, Any, int], tuple]  # -> (state, step metric rows)
    evaluate: Callable[[RunSpec, Settings, Any], dict]  # -> eval metrics at the state
    total_steps: Callable[[Settings], int]
    analyse: Optional[Callable[[Path, Settings, "Progress"], None]] = None
    figures: Optional[Callable[[Path], list]] = None
    report: Optional[Callable[[Path], str]] = None
    # command-line options of its own: names among "dataset" (--dataset), "layers"
    # (--layers), "data_dir" (--data-dir); each sets the setting of the same name, so it
    # is recorded in the manifest and checked on --resume
    options: tuple = ()
    # settings -> None, raising UsageError for what the settings' own validation cannot
    # see (data files, ...); called once before anything is written
    check: Optional[Callable[[Settings], None]] = None
    # the default --estimators under --quick (None: all of estimator_names)
    quick_estimators: Optional[tuple] = None


def versions() -> dict:
    import numpyro
    import optax

    import stochbp
    return {"python": sys.version.split()[0], "jax": jax.__version__,
            "numpyro": numpyro.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "stochbp": stochbp.__version__,
            "platform": platform.platform(), "backend": jax.default_backend()}


def to_host(tree):
    return parallel.to_host(tree)


class Progress:
    """Progress of ``total`` parts: a tqdm bar where stderr is a terminal. Elsewhere (a
    log file, CI, a pipe) tqdm stays silent, and if ``log`` is given each update is a
    line instead (``desc: done/total (note), seconds``), so a long silent stretch
    such as the truncation analysis still shows that it advances. ``enabled=False``
    (``--quiet``) shows nothing."""

    def __init__(self, total: int, desc: str, enabled: bool = True,
                 log: Optional[Callable] = None):
        self.bar, self.log = None, None
        self.total, self.desc, self.done, self.started = total, desc, 0, time.time()
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                            disable=None)  # off when stderr is not a terminal
        except ImportError:  # pragma: no cover
            self.bar = None
        if self.bar is None or self.bar.disable:
            self.log = log
        if self.log is not None:
            self.log(f"{desc}: started ({total} parts)")

    def update(self, n: int, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.log is not None:
            what = f" ({note})" if note else ""
            self.log(f"{self.desc}: {self.done}/{self.total} done{what}, "
                     f"{time.time() - self.started:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_labels(out: Path, manifest: dict) -> None:
    """Refuse to resume a run whose manifest uses an earlier version's estimator
    labels (labels.ALIASES)."""
    estimators = manifest.get("estimators")
    renamed = sorted(set(estimators) & set(labels.ALIASES)) \
        if isinstance(estimators, list) else []
    if renamed:
        raise UsageError(f"--resume: {out} was started by an earlier stochbp that "
                         f"labelled estimators {renamed} (now "
                         f"{[labels.canonical(r) for r in renamed]}); finish it with "
                         "that version, or start again in another --out")


def _check_out_dir(out: Path, experiment: Experiment, manifest: dict, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise UsageError(f"output directory {out} already exists and is not empty; "
                             "refusing to overwrite it. Use --resume to continue that run "
                             "or choose another --out.")
        mpath = out / "manifest.json"
        if not mpath.exists():
            raise UsageError(f"--resume: {out} has no manifest.json; it is not a stochbp "
                             "results directory")
        try:
            old = io.read_json(mpath)
        except (OSError, ValueError) as err:
            raise UsageError(f"--resume: {mpath} is damaged ({err}); it records the "
                             "settings of the run, so it cannot be recomputed: start "
                             "again in another --out") from None
        if not isinstance(old, dict):
            raise UsageError(f"--resume: {mpath} is not a stochbp manifest")
        check_labels(out, old)
        for field in ("experiment", "settings", "seeds", "estimators", "precision"):
            if old.get(field) != manifest[field]:
                raise UsageError(f"--resume: {out} was started with a different {field}: "
                                 f"{_difference(old.get(field), manifest[field])}")
        before, now = _mesh_devices(old), manifest["mesh"]["devices"]
        if before != now:
            raise UsageError(f"--resume: {out} was started on {before} device(s) and would "
                             f"now continue on {now}; a run continues on the mesh it "
                             "started on (sums over a different number of devices round "
                             f"differently). Resume with --devices {before} (or without "
                             "--devices), or start again in another --out")
    elif resume and not out.exists():
        raise UsageError(f"--resume: {out} does not exist; nothing to resume")


def _mesh_devices(manifest: dict) -> int:
    """The device count a manifest records (1 for manifests written before meshes)."""
    mesh = manifest.get("mesh") if isinstance(manifest, dict) else None
    devices = mesh.get("devices") if isinstance(mesh, dict) else None
    return devices if isinstance(devices, int) else 1


def _recorded_mesh(out: Path, resume: bool) -> dict:
    """On --resume: the mesh entry of the manifest in ``out`` ({} when there is none); a
    resumed run keeps the manifest's account of how its device count was chosen."""
    if not resume:
        return {}
    try:
        mesh = io.read_json(Path(out) / "manifest.json").get("mesh")
    except (OSError, ValueError, AttributeError):
        return {}
    return mesh if isinstance(mesh, dict) else {}


def _resumed_devices(out: Path, resume: bool) -> Optional[int]:
    """On --resume without --devices: the count the manifest in ``out`` records (None
    when there is no readable manifest; _check_out_dir then reports it)."""
    if not resume:
        return None
    try:
        return _mesh_devices(io.read_json(Path(out) / "manifest.json"))
    except (OSError, ValueError):
        return None


def _difference(then, now) -> str:
    """What differs between a recorded value and the new one, in a few words: for two
    dicts (settings) only the entries that differ, each with both values."""
    if isinstance(then, dict) and isinstance(now, dict):
        missing = object()
        keys = [k for k in sorted(set(then) | set(now))
                if then.get(k, missing) != now.get(k, missing)]
        show = lambda d, k: repr(d[k]) if k in d else "(none)"  # noqa: E731
        return "; ".join(f"{k} {show(then, k)} then, {show(now, k)} now" for k in keys)
    return f"{then!r} then, {now!r} now"


def resolve_settings(experiment: Experiment, quick: bool,
                     overrides: Optional[dict] = None) -> Settings:
    """The preset's settings with the overrides (--set) applied, validated."""
    try:
        return experiment.settings(quick).replace(**(overrides or {}))
    except SettingError as err:
        raise SettingError(f"{experiment.name}: {err}", err.name, err.value,
                           err.requirement) from None


def run_experiment(experiment: Experiment, out: Path, *, quick: bool, seeds: list,
                   estimators: list, resume: bool, command: str = "",
                   progress: bool = True, log: Callable = print,
                   overrides: Optional[dict] = None, devices: Optional[int] = None) -> Path:
    """Every run of the grid not finished in ``out``, then the experiment's analysis,
    data parallel on ``devices`` devices (None: on resume, the count the run started
    with; else all that JAX sees, or the largest count dividing the batch size when that
    many do not, said on stderr and in the manifest's mesh.chosen_by). Settings, data,
    the mesh and the directory are checked before anything is written."""
    out = Path(out)
    settings = resolve_settings(experiment, quick, overrides)
    args_devices = devices
    if devices is None:
        devices = _resumed_devices(out, resume)
        if devices is not None and devices > len(jax.devices()):
            raise UsageError(f"--resume: {out} was started on {devices} devices and JAX "
                             f"sees {len(jax.devices())} here; a run continues on the mesh "
                             "it started on: resume it where that many devices exist, or "
                             "start again in another --out")
    batch = getattr(settings, "batch_size", None)
    if devices is not None:
        recorded = _recorded_mesh(out, resume)
        how = recorded.get("chosen_by") if isinstance(recorded.get("chosen_by"), str) \
            else ("--devices" if args_devices is not None
                  else "--resume: the count the run started with")
    else:
        devices = parallel.default_device_count(batch)
        visible = len(jax.devices())
        how = f"default: all {visible} devices JAX sees"
        if devices < visible:
            how = (f"default: the largest count of the {visible} devices JAX sees that "
                   f"divides batch_size={batch}")
            print(f"stochbp: {visible} devices visible; batch_size={batch} is not a "
                  f"multiple of {visible}, so each batch is split over {devices} (the "
                  "largest count that divides it); choose --devices to set it",
                  file=sys.stderr)
    mesh = parallel.make_mesh(devices)
    if batch is not None:
        parallel.check_divisible("batch_size", batch, mesh)
    with parallel.using(mesh):
        if experiment.check is not None:
            experiment.check(settings)
        manifest = {"experiment": experiment.name, "quick": quick,
                    "settings": settings.to_dict(), "seeds": list(seeds),
                    "estimators": list(estimators),
                    "precision": "float64" if jax.config.jax_enable_x64 else "float32",
                    "mesh": {**parallel.describe(mesh), "chosen_by": how},
                    "versions": versions(),
                    "command": command}
        _check_out_dir(out, experiment, manifest, resume)
        if jax.process_count() > 1:  # every process has checked before process 0 writes
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("stochbp: results directory checked")
        return _run_grid(experiment, out, settings, manifest, seeds, estimators, progress,
                         log)


def _run_grid(experiment: Experiment, out: Path, settings: Settings, manifest: dict,
              seeds: list, estimators: list, progress: bool, log: Callable) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output directory {out}: "
                         f"{err.strerror or err}") from None
    with io.Lock(out):
        for tmp in io.sweep_temporaries(out):
            warn(f"removed {tmp}, left by an interrupted write")
        if not (out / "manifest.json").exists():
            manifest["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            io.write_json(out / "manifest.json", manifest)
        specs = experiment.runs(settings, estimators, seeds)
        for i, spec in enumerate(specs):
            if _finished(out, spec):
                continue
            bar = Progress(experiment.total_steps(settings),
                           f"[{i + 1}/{len(specs)}] {spec.run_id}", progress)
            _run_one(experiment, settings, spec, out, manifest, bar)
            log(f"finished {spec.run_id} ({i + 1}/{len(specs)})")
        if experiment.analyse is not None:
            # a line per part where stderr is not a terminal (the runs above print a
            # line each as they finish)
            experiment.analyse(out, settings, functools.partial(
                Progress, enabled=progress, log=log))
    return out


def warn(message: str) -> None:
    """Damaged files and repairs are always reported (also with --quiet), on stderr."""
    print(f"stochbp: warning: {message}", file=sys.stderr)


def _finished(out: Path, spec: RunSpec) -> bool:
    """Whether the run's result files exist and are sound; damaged ones are set aside
    (renamed, never deleted) so that the run is recomputed."""
    path = out / "runs" / f"{spec.run_id}.json"
    if not path.exists() and not path.with_suffix(".csv").exists():
        return False
    try:
        io.check_run(path)
        return True
    except io.DamagedFile as err:
        for p in (path, path.with_suffix(".csv")):
            if p.exists():
                warn(f"{err}; moved it to {io.set_aside(p)} and recomputing the run")
        return False


def _run_one(experiment: Experiment, settings: Settings, spec: RunSpec, out: Path,
             manifest: dict, bar: Progress) -> None:
    """One run from its checkpoint (or from the start) to its result files, evaluating
    and checkpointing after every ``eval_every`` steps. A damaged checkpoint is set
    aside and the run restarts from scratch."""
    ckpt_path = out / "checkpoints" / f"{spec.run_id}.pkl"
    ckpt = None
    if ckpt_path.exists():
        try:
            ckpt = io.read_checkpoint(ckpt_path)
        except io.DamagedFile as err:
            warn(f"{err}; moved it to {io.set_aside(ckpt_path)} and restarting "
                f"{spec.run_id} from the start")
    if ckpt is not None:
        state, steps, evals = ckpt["state"], ckpt["steps"], ckpt["evals"]
    else:
        state, steps, evals = experiment.init(spec, settings), [], []
        evals.append({"step": 0, **experiment.evaluate(spec, settings, state)})
    total = experiment.total_steps(settings)
    step = steps[-1]["step"] + 1 if steps else 0
    bar.update(step)
    started = time.time()
    while step < total:
        n = min(settings.eval_every, total - step)
        state, rows = experiment.advance(spec, settings, state, n)
        step += n
        steps.extend(rows)
        evals.append({"step": step, **experiment.evaluate(spec, settings, state)})
        io.write_pickle(ckpt_path, {"state": to_host(state), "steps": steps,
                                    "evals": evals})
        bar.update(n)
    bar.close()
    io.write_json(out / "runs" / f"{spec.run_id}.json",
                  {"run_id": spec.run_id, "config": spec.config,
                   "experiment": experiment.name, "settings": manifest["settings"],
                   "versions": manifest["versions"], "mesh": manifest["mesh"],
                   "steps": steps, "evals": evals,
                   "wall_seconds_last_session": time.time() - started})
    io.write_csv(out / "runs" / f"{spec.run_id}.csv",
                 [dict(r, kind="step") for r in steps] + [dict(r, kind="eval")
                                                          for r in evals])
    if ckpt_path.exists() and parallel.is_writer():
        ckpt_path.unlink()

