"""Several devices (jax.sharding): tests/devices_check.py runs in a subprocess with 4
host CPU devices (XLA_FLAGS must be set before JAX starts) and reports; these tests
assert on its report. Library: one estimator of every kind (Fourier on Normal, Laplace,
Bernoulli with per_example's chunked schedule, categorical with linear; pathwise on
Normal and a mixture; grg; disarm; score function and RELAX with their states;
Gumbel-softmax; a batch of samples split) gives, jitted with its inputs split over a
4-device mesh, the values, gradients and states of one device. Experiments: a two-layer
sbn run with fourier on 4 devices equals the 1-device run; the manifest records the
mesh; an interrupted 4-device run resumes on 4 devices and is refused on 1; a process
other than 0 writes nothing; without --devices the largest count that divides the batch is taken; a batch
that an explicit --devices does not split evenly, and a device count JAX does not have,
are refused."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
TOL = 1e-12  # float64: only the order of sums differs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    bits = lambda n: (rng.random((n, 784)) < 0.15).astype(np.uint8)  # noqa: E731
    np.savez(data / "binarized_mnist.npz", train=bits(60), valid=bits(10), test=bits(12))
    work = tmp_path_factory.mktemp("work")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run([sys.executable, str(HERE / "devices_check.py"), str(data),
                           str(work)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_four_devices_exist(report):
    assert report["devices"] == 4


def test_every_estimator_kind_sharded_equals_one_device(report):
    lib = report["library"]
    assert len(lib["cases"]) == 12
    for name, case in lib["cases"].items():
        assert case["rel_diff"] < TOL, (name, case)
        assert case["input_sharded"], name
    # the work was split (the sharded program communicates) and stays on the devices
    assert lib["collective"] and not lib["callback"]
    # gradients with respect to split parameters come back split, not gathered
    split = [n for n, c in lib["cases"].items() if c["grad_sharded"]]
    assert len(split) >= 10, lib["cases"]


def test_experiment_on_four_devices_equals_one_device(report):
    exp = report["experiments"]
    assert exp["code_one_device"] == 0 and exp["resume_code"] == 0
    assert exp["epochs_compared"] == [2, 2]
    assert exp["experiment_rel_diff"] < 1e-9
    assert exp["manifest_mesh"]["devices"] == 4 and exp["manifest_mesh"]["platform"] == "cpu"
    assert exp["one_device_manifest_mesh"]["devices"] == 1
    assert exp["run_mesh"] == exp["manifest_mesh"]


def test_resume_on_another_device_count_is_refused(report):
    exp = report["experiments"]
    assert exp["interrupted_code"] == 130 and exp["checkpoint_left"]
    assert exp["resume_other_count_code"] == 2
    msg = exp["resume_other_count_message"]
    assert "started on 4 device(s)" in msg and "continue on 1" in msg
    assert "--devices 4" in msg
    # resumed without --devices: the manifest's count
    assert exp["manifest_mesh"]["devices"] == 4


def test_only_process_zero_writes(report):
    exp = report["experiments"]
    assert exp["non_writer_code"] == 0
    assert exp["non_writer_files"] == []


def test_uneven_batch_is_refused(report):
    exp = report["experiments"]
    assert exp["odd_batch_code"] == 2
    assert "batch_size=10 is not a multiple of the 4 devices" in exp["odd_batch_message"]


def test_default_device_count_divides_the_batch(report):
    """Without --devices a run takes the largest device count that divides batch_size
    (2 of 4 for a batch of 10) and says so; an explicit --devices 4 is refused
    (test_uneven_batch_is_refused)."""
    exp = report["experiments"]
    assert exp["default_devices_code"] == 130  # stopped at its first step on purpose
    assert exp["default_devices_mesh"]["devices"] == 2
    assert "divides batch_size=10" in exp["default_devices_mesh"]["chosen_by"]
    assert "split over 2" in exp["default_devices_message"]
    assert exp["manifest_mesh"]["chosen_by"] == "--devices"


def test_default_device_count_without_devices(monkeypatch):
    from stochbp.experiments import parallel
    monkeypatch.setattr(parallel.jax, "devices", lambda: list(range(8)))
    assert [parallel.default_device_count(b) for b in (100, 96, 7, 9, None)] == \
        [5, 8, 7, 3, 8]


def test_unavailable_device_count_is_refused(report):
    exp = report["experiments"]
    assert exp["too_many_devices_code"] == 2
    assert "--devices must be an integer from 1 to 4" in exp["too_many_devices_message"]
    assert "--devices=5" in exp["too_many_devices_message"]
