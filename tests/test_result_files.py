"""Result files that cannot be trusted are never counted as finished (issue 11): damaged
run files, checkpoints, leftovers of interrupted writes, concurrent resumes, bad paths."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from stochbp import cli

TINY = ["--seeds", "1", "--estimators", "fourier,pathwise", "--set", "toys=[1]",
        "--set", "dims=[2]", "--set", "steps=20", "--set", "eval_every=10",
        "--set", "variance_draws=3", "--quiet"]
RUN = "toy1-d2-pathwise-seed0"


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def numbers(out):
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items()
                     if k in ("steps", "evals", "config")}
            for p in sorted((out / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "gamma"
    assert run("run", "gamma-toy", "--out", out, *TINY) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path):
    out = tmp_path / "gamma"
    shutil.copytree(finished, out)
    return out


DAMAGE = {
    "garbage json": lambda p: p.write_text("{not json"),
    "truncated json": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "empty json": lambda p: p.write_text(""),
    "valid json, wrong content": lambda p: p.write_text(json.dumps({"run_id": RUN})),
    "json of another run": lambda p: p.write_text(p.read_text().replace(
        RUN, "toy1-d2-fourier-seed0")),
    "missing csv": lambda p: p.with_suffix(".csv").unlink(),
    "truncated csv": lambda p: p.with_suffix(".csv").write_text(
        "\n".join(p.with_suffix(".csv").read_text().splitlines()[:5])),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_run_is_set_aside_and_recomputed_on_resume(finished, copy, damage,
                                                           capsys):
    path = copy / "runs" / f"{RUN}.json"
    DAMAGE[damage](path)
    assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 0
    err = capsys.readouterr().err
    assert RUN in err and "recomputing" in err
    assert numbers(copy) == numbers(finished)  # the same numbers as before the damage
    assert list((copy / "runs").glob("*.damaged*"))  # kept aside, never deleted


def test_report_skips_a_damaged_run_naming_the_file(copy, capsys):
    (copy / "runs" / f"{RUN}.json").write_text("{not json")
    assert run("report", copy) == 0
    err = capsys.readouterr().err
    assert f"{RUN}.json" in err and "left out of the report" in err
    assert "Traceback" not in err


def test_damaged_checkpoint_restarts_the_run(finished, copy, capsys):
    for p in (copy / "runs").glob(f"{RUN}.*"):
        p.unlink()
    (copy / "checkpoints").mkdir(exist_ok=True)
    (copy / "checkpoints" / f"{RUN}.pkl").write_bytes(b"\x80\x05garbage")
    assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 0
    err = capsys.readouterr().err
    assert f"{RUN}.pkl" in err and "restarting" in err
    assert numbers(copy) == numbers(finished)


def test_leftover_temporary_files_are_swept_on_resume(copy, capsys):
    leftovers = [copy / "runs" / f".{RUN}.json.abc.tmp", copy / ".manifest.json.x.tmp"]
    for p in leftovers:
        p.write_text("partial")
    assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 0
    assert not any(p.exists() for p in leftovers)
    assert "interrupted write" in capsys.readouterr().err


def test_a_second_process_on_the_same_folder_is_refused(copy, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (copy / ".lock").write_text(str(sleeper.pid))
        assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 2
        err = capsys.readouterr().err
        assert f"pid {sleeper.pid}" in err and len(err.strip().splitlines()) == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone: the lock is stale and taken over, then released on exit
    assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 0
    assert not (copy / ".lock").exists()


def test_out_that_is_a_file_is_one_line_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert run("run", "gamma-toy", "--out", target, *TINY) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1


def test_unwritable_out_is_one_line_error(capsys):
    code = run("run", "gamma-toy", "--out", "/proc/stochbp-forbidden/x", *TINY)
    err = capsys.readouterr().err
    assert code != 0 and "/proc/stochbp-forbidden" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("setting", ["learning_rate=nan", "num_samples=0", "steps=abc",
                                     "dims=[0]", "dims=[]", "variance_draws=1"])
def test_bad_settings_fail_before_anything_is_written(tmp_path, setting, capsys):
    out = tmp_path / "g"
    assert run("run", "gamma-toy", "--out", out, *TINY, "--set", setting) == 2
    err = capsys.readouterr().err
    assert setting.split("=")[0] in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_damaged_manifest_is_one_line_error(copy, capsys):
    (copy / "manifest.json").write_text("{oops")
    assert run("run", "gamma-toy", "--out", copy, "--resume", *TINY) == 2
    assert run("report", copy) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "Traceback" not in err
    assert os.path.exists(copy / "manifest.json")


def test_result_files_get_the_ordinary_mode(finished, tmp_path):
    """Atomic writes go through a 0600 temporary file; the result gets 0666 less the
    umask, as open() and the figures do (0644 under umask 022)."""
    from stochbp.experiments import io
    current = os.umask(0o022)
    os.umask(current)
    for p in [finished / "manifest.json", *(finished / "runs").iterdir()]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~current, p
    for umask, mode in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            io.write_json(tmp_path / f"r{umask}.json", {"a": 1})
            io.write_pickle(tmp_path / f"c{umask}.pkl", {"a": 1})
            (tmp_path / f"plain{umask}").write_text("x")
            assert os.umask(umask) == umask  # the writes left the umask as it was
        finally:
            os.umask(old)
        assert (tmp_path / f"plain{umask}").stat().st_mode & 0o777 == mode
        assert (tmp_path / f"r{umask}.json").stat().st_mode & 0o777 == mode
        assert (tmp_path / f"c{umask}.pkl").stat().st_mode & 0o777 == mode
