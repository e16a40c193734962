"""The command line end to end on tiny settings, its errors, and resumption."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stochbp import cli
from stochbp.experiments import gamma_toy, laplace_blr

GAMMA_TINY = ["--set", "steps=40", "--set", "eval_every=10", "--set", "dims=[2]",
              "--set", "variance_draws=5", "--quiet"]
BLR_TINY = ["--set", "epochs=2", "--set", "snapshot_epoch=2", "--set", "variance_draws=4",
            "--set", "elbo_samples=8", "--set", "truncation_levels=[1,2]",
            "--set", "truncation_draws=4", "--set", "reference_chunks=2",
            "--set", "reference_chunk_size=64", "--set", "num_samples=4", "--quiet"]


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def numbers(out: Path) -> dict:
    """Every run's per-step and per-eval metrics (what must not change on resume)."""
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items()
                     if k in ("steps", "evals", "config")}
            for p in sorted((out / "runs").glob("*.json"))}


def test_gamma_toy_end_to_end(tmp_path):
    out = tmp_path / "gamma"
    # two of the four estimators: the grid, the pooling test (fourier against pathwise)
    # and the report are what this tests; each estimator's training is tested elsewhere
    assert run("run", "gamma-toy", "--seeds", "1", "--estimators", "fourier,pathwise",
               "--out", out, *GAMMA_TINY) == 0
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 2 * 2  # toys x estimators
    result = json.loads(runs[0].read_text())
    assert result["versions"]["jax"] and result["settings"]["steps"] == 40
    assert len(result["steps"]) == 40 and len(result["evals"]) == 5
    assert (out / "runs" / runs[0].name.replace(".json", ".csv")).exists()
    assert not list((out / "checkpoints").glob("*.pkl"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0] and "gamma-toy" in manifest["command"]
    # the toy-2 pooling test trains fourier with the runs' own scan, keys and seed
    pooling = json.loads((out / "analysis" / "pooling.json").read_text())
    by = {r["estimator"]: r for r in pooling["rows"]}
    assert set(by) == {"fourier", "printed", "pathwise"}
    fourier_run = json.loads((out / "runs" / "toy2-d2-fourier-seed0.json").read_text())
    assert by["fourier"]["mean_loss"][0] == pytest.approx(
        sum(r["loss"] for r in fourier_run["steps"]) / 40, rel=1e-6)
    assert run("report", out) == 0
    report = (out / "report.md").read_text()
    assert "paper's claim" in report and "gamma_toy1.png" in report
    assert "does the paper's result come from the summed f?" in report
    assert (out / "figures" / "gamma_toy1.png").stat().st_size > 10_000


def test_laplace_blr_end_to_end(tmp_path, capsys):
    out = tmp_path / "results" / "blr"
    loud = [a for a in BLR_TINY if a != "--quiet"]
    assert run("run", "laplace-blr", "--seeds", "1", "--out", out, *loud) == 0
    # stderr is not a terminal here: a line per finished run and per part of the
    # truncation analysis (levels 1, 2, the reference and two baselines)
    n = len(laplace_blr.ESTIMATORS)
    err = capsys.readouterr().err
    assert err.count("finished ") == n and f"({n}/{n})" in err
    assert "truncation analysis: started (5 parts)" in err
    for i, part in enumerate(["pathwise reference", "fourier-n1", "fourier-n2",
                              "pathwise", "score_function"]):
        assert f"truncation analysis: {i + 1}/5 done ({part})" in err
    assert len(list((out / "runs").glob("*.json"))) == n
    analysis = json.loads((out / "analysis" / "truncation.json").read_text())
    assert [r["estimator"] for r in analysis["rows"]][:2] == ["fourier-n1", "fourier-n2"]
    assert run("report", tmp_path / "results") == 0
    report = (tmp_path / "results" / "report.md").read_text()
    assert "Section 6.2" in report and "blr/figures/blr_training.png" in report


def test_errors_name_the_valid_choices(tmp_path, capsys):
    assert run("run", "gamma", "--out", tmp_path / "a") == 2
    assert "gamma-toy, laplace-blr" in capsys.readouterr().err
    assert run("run", "gamma-toy", "--estimators", "fourier,relax", "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "relax" in err and "fourier, pathwise, score_function, grg" in err
    assert run("run", "gamma-toy", "--set", "stpes=3", "--out", tmp_path / "c") == 2
    assert "steps" in capsys.readouterr().err
    assert run("run", "gamma-toy", "--set", "steps=-3", "--out", tmp_path / "d") == 2
    assert capsys.readouterr().err == ("stochbp: error: gamma-toy: setting steps must be a "
                                       "positive integer; got steps=-3\n")
    assert run("run", "gamma-toy", "--set", "dims=[2,0]", "--out", tmp_path / "e") == 2
    assert "dims=[2, 0]" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abcde")  # nothing written
    assert run("report", tmp_path) == 2


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert run("run", "gamma-toy", "--out", out, *GAMMA_TINY) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert run("run", "gamma-toy", "--out", out, "--resume", *GAMMA_TINY) == 2  # no manifest


def test_ctrl_c_then_resume_gives_the_same_numbers(tmp_path, monkeypatch):
    args = ["--seeds", "2", "--estimators", "fourier,grg", "--set", "toys=[1]", *GAMMA_TINY]
    ref = tmp_path / "ref"
    assert run("run", "gamma-toy", "--out", ref, *args) == 0

    calls = {"n": 0}
    real_advance = gamma_toy.EXPERIMENT.advance

    def flaky_advance(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # second run, third chunk
            raise KeyboardInterrupt
        return real_advance(*a, **k)

    monkeypatch.setattr(gamma_toy.EXPERIMENT, "advance", flaky_advance)
    out = tmp_path / "interrupted"
    assert run("run", "gamma-toy", "--out", out, *args) == 130
    finished = sorted((out / "runs").glob("*.json"))
    assert len(finished) == 1  # the first run finished, complete
    json.loads(finished[0].read_text())
    assert len(list((out / "checkpoints").glob("*.pkl"))) == 1
    monkeypatch.setattr(gamma_toy.EXPERIMENT, "advance", real_advance)
    # settings, seeds and estimators come from the manifest: none is given again
    assert run("run", "gamma-toy", "--out", out, "--resume", "--quiet") == 0
    assert numbers(out) == numbers(ref)


def test_kill_then_resume_gives_the_same_numbers(tmp_path):
    """SIGKILL mid-run, then --resume in a fresh process: same numbers as an
    uninterrupted run. The runs are subprocesses so that they have the CLI's default
    (float32) precision; the uninterrupted reference runs in the resuming process after
    the resumed run has finished (toy 1: no pooling analysis after the run)."""
    args = ["--seeds", "1", "--estimators", "pathwise", "--set", "toys=[1]",
            "--set", "steps=1500", "--set", "eval_every=5", "--set", "dims=[2]",
            "--set", "variance_draws=2", "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_ENABLE_X64="0")
    out, ref = tmp_path / "killed", tmp_path / "ref"
    cmd = [sys.executable, "-m", "stochbp.cli", "run", "gamma-toy", *args, "--out"]
    proc = subprocess.Popen(cmd + [str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_dir = out / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.exists() and list(ckpt_dir.glob("*.pkl")):
            time.sleep(0.2)
            break
        time.sleep(0.05)
    was_running = proc.poll() is None
    if was_running:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if was_running:
        assert not list((out / "runs").glob("*.json"))  # nothing half-written
    resume_then_reference = (
        "import sys; from stochbp import cli; "
        f"a = {args!r}; "
        f"sys.exit(cli.main(['run', 'gamma-toy', *a, '--out', {str(out)!r}, '--resume'])"
        f" or cli.main(['run', 'gamma-toy', *a, '--out', {str(ref)!r}]))")
    subprocess.run([sys.executable, "-c", resume_then_reference], env=env, check=True,
                   capture_output=True)
    assert numbers(out) == numbers(ref)


def test_resume_refuses_other_precision(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["--seeds", "1", "--estimators", "pathwise", "--set", "toys=[1]", *GAMMA_TINY]
    assert run("run", "gamma-toy", "--out", out, *args) == 0  # float64 under the tests
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "float64"
    manifest["precision"] = "float32"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert run("run", "gamma-toy", "--out", out, "--resume", *args) == 2
    assert "different precision" in capsys.readouterr().err


def _hand_made_results(tmp_path, **settings_changes):
    """A results folder holding only a manifest (conflicts are refused before any run)."""
    out = tmp_path / "resumable"
    out.mkdir(parents=True)
    settings = gamma_toy.settings(False).replace(steps=40, eval_every=10).to_dict()
    settings.update(settings_changes)
    settings = {k: v for k, v in settings.items() if v is not None}
    (out / "manifest.json").write_text(json.dumps({
        "experiment": "gamma-toy", "quick": False, "settings": settings, "seeds": [0, 1],
        "estimators": ["fourier", "grg"], "precision": "float64", "versions": {}}))
    return out


@pytest.mark.parametrize("given, named", [
    (["--set", "steps=50"], ["steps=40", "steps=50", "--set"]),
    (["--set", "learning_rate=0.01"], ["learning_rate=0.001", "learning_rate=0.01"]),
    (["--seeds", "3"], ["seeds [0, 1]", "--seeds 3"]),
    (["--seeds", "0,2"], ["seeds [0, 1]", "--seeds 0,2"]),
    (["--estimators", "fourier"], ["estimators fourier,grg", "--estimators fourier"]),
    (["--quick"], ["without --quick"]),
    (["--set", "steps=-1"], ["steps must be a positive integer"]),
])
def test_resume_refuses_a_value_that_contradicts_the_manifest(tmp_path, capsys, given,
                                                             named):
    out = _hand_made_results(tmp_path)
    assert run("run", "gamma-toy", "--out", out, "--resume", *given) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(n in err for n in named), err
    assert "init_shape" not in err  # a setting that is not in question is not printed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # nothing run


def test_resume_names_only_the_settings_that_differ(tmp_path, capsys):
    """A manifest without a setting this version has (an older stochbp's): the runner
    names that setting, with both values, and nothing else."""
    out = _hand_made_results(tmp_path, init_scale=None)
    assert run("run", "gamma-toy", "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "different settings: init_scale (none) then, 1.0 now" in err
    assert "steps" not in err and len(err.strip().splitlines()) == 1
    other = _hand_made_results(tmp_path / "x", steps="many")  # an invalid recorded value
    other_code = run("run", "gamma-toy", "--out", other, "--resume")
    err = capsys.readouterr().err
    assert other_code == 2 and "records settings this version does not accept" in err
    assert "steps='many'" in err and len(err.strip().splitlines()) == 1


def test_resume_of_another_experiment_says_which(tmp_path, capsys):
    out = _hand_made_results(tmp_path)
    assert run("run", "laplace-blr", "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "holds a 'gamma-toy' run" in err and len(err.strip().splitlines()) == 1


def test_report_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """A missing folder, a file, a folder without results and a manifest that lacks
    what the report prints: one line each, exit code 2; Ctrl-C: one line, 130."""
    (tmp_path / "file").write_text("x")
    partial = tmp_path / "partial"
    (partial / "runs").mkdir(parents=True)
    (partial / "manifest.json").write_text(json.dumps(
        {"experiment": "gamma-toy", "settings": {}, "versions": {}}))
    for target, says in [(tmp_path / "missing" / "path", "is not a directory"),
                         (tmp_path / "file", "is not a directory"),
                         (partial / "runs", "holds no stochbp results"),
                         (partial, "missing or malformed: quick, seeds, estimators")]:
        assert run("report", target) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    from stochbp.experiments import reporting

    def interrupted(results):
        raise KeyboardInterrupt
    monkeypatch.setattr(reporting, "write_report", interrupted)
    assert run("report", partial) == 130
    assert capsys.readouterr().err.strip() == "stochbp: interrupted"
