"""The experiments' typed settings, estimator labels and optional dependencies: fast
checks that run nothing but validation (the runs themselves are in test_cli.py and
test_discrete_experiments.py)."""
import json
import subprocess
import sys

import pytest

from stochbp import cli, experiments
from stochbp.experiments import discrete, gamma_toy, labels, laplace_blr
from stochbp.experiments.settings import SettingError


@pytest.mark.parametrize("name", sorted(experiments.registry()))
def test_presets_are_valid_and_round_trip(name):
    exp = experiments.get(name)
    for quick in (True, False):
        s = exp.settings(quick)
        d = s.to_dict()
        assert set(d) == set(s.names())
        json.dumps(d)  # what the manifest records
        assert s.replace(**d) == s  # the recorded dict rebuilds the same settings
        hash(s)  # settings key the caches of compiled functions
    assert exp.settings(True) != exp.settings(False)


@pytest.mark.parametrize("change,message", [
    ({"steps": 0}, "setting steps must be a positive integer; got steps=0"),
    ({"steps": 2.5}, "steps must be a positive integer; got steps=2.5"),
    ({"steps": True}, "steps must be a positive integer; got steps=True"),
    ({"dims": []}, "dims must be a non-empty list, each element a positive integer; "
                   "got dims=[]"),
    ({"dims": [3, -1]}, "dims must be a non-empty list"),
    ({"toys": [3]}, "toys must be a non-empty list, each element one of 1, 2; got toys=[3]"),
    ({"variance_draws": 1}, "variance_draws must be an integer >= 2; got variance_draws=1"),
    ({"learning_rate": "fast"}, "learning_rate must be a positive number; got "
                                "learning_rate='fast'"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
    ({"stpes": 3}, "unknown setting(s) ['stpes']; valid settings: dims, eval_every"),
])
def test_gamma_settings_errors_name_the_setting_and_value(change, message):
    with pytest.raises(SettingError) as err:
        gamma_toy.settings(True).replace(**change)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.name == next(iter(change))


def test_settings_are_typed_and_frozen():
    s = gamma_toy.settings(True).replace(learning_rate=1, dims=[2, 3])
    assert s.learning_rate == 1.0 and isinstance(s.learning_rate, float)
    assert s.dims == (2, 3) and s.to_dict()["dims"] == [2, 3]
    with pytest.raises(AttributeError):
        s.steps = 3


def test_cross_field_checks():
    blr = laplace_blr.settings(True)
    with pytest.raises(SettingError, match="steps_per_epoch must be at most 569 // "
                                           "batch_size = 4"):
        blr.replace(batch_size=128)
    assert blr.replace(batch_size=128, steps_per_epoch=4).steps_per_epoch == 4
    with pytest.raises(SettingError, match="snapshot_epoch must be at most epochs = 100"):
        blr.replace(snapshot_epoch=101)
    sbn = discrete.SBN.settings(False)
    assert sbn.total_epochs == 500 and sbn.replace(dataset="omniglot").total_epochs == 100
    for bad, message in [({"layers": 3}, "layers must be one of 1, 2; got layers=3"),
                         ({"dataset": "cifar"}, "one of mnist, omniglot"),
                         ({"epochs": 0}, "epochs must be a positive integer or null "
                                         "(the paper's); got epochs=0"),
                         ({"chunk_size": 0}, "chunk_size=0"),
                         ({"relax_temperature": -1}, "relax_temperature=-1")]:
        with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            sbn.replace(**bad)
    with pytest.raises(SettingError, match="unknown setting"):
        discrete.BERNOULLI_VAE.settings(True).replace(layers=2)  # only the sbn has layers


def test_one_label_scheme():
    for exp in experiments.registry().values():
        for name in exp.estimator_names:
            label = labels.parse(name)
            assert str(label) == name
            assert hasattr(__import__("stochbp"), label.estimator), name
    assert labels.parse("fourier-s10") == labels.Label("fourier", samples=10)
    assert labels.parse("fourier-n4") == labels.Label("fourier", terms=4)
    assert labels.parse("gumbel-softmax") == labels.Label("gumbel_softmax")  # earlier label
    for bad in ("fourier-x3", "fourier-s0", "Fourier", "fourier-s"):
        with pytest.raises(ValueError, match=f"label={bad!r}"):
            labels.parse(bad)
    assert cli._parse_estimators("fourier-s1, gumbel-softmax",
                                 discrete.CATEGORICAL_ESTIMATORS) == ["fourier-s1",
                                                                      "gumbel_softmax"]


def test_library_and_help_need_no_experiments_extra(tmp_path):
    """`import stochbp` imports none of the extra; without it, `stochbp --help` works and
    `stochbp run` says in one line how to install it, writing nothing."""
    script = f"""
import sys
for name in ("optax", "matplotlib", "sklearn"):
    sys.modules[name] = None  # import fails, importlib.util.find_spec gives None
import stochbp
from stochbp import cli
try:
    cli.main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
assert cli.main(["run", "gamma-toy", "--out", {str(tmp_path / "out")!r}]) == 2
assert cli.main(["report", {str(tmp_path)!r}]) == 2
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert errors == ["stochbp: error: `stochbp run` needs the experiments extra (missing: "
                      "optax, matplotlib, scikit-learn); install it with: pip install "
                      "'stochbp[experiments]'",
                      "stochbp: error: `stochbp report` needs the experiments extra "
                      "(missing: optax, matplotlib, scikit-learn); install it with: pip "
                      "install 'stochbp[experiments]'"]
    assert "usage: stochbp" in proc.stdout
    assert not (tmp_path / "out").exists()
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, stochbp; print([m for m in ('optax', "
         "'matplotlib', 'sklearn', 'stochbp.experiments') if m in sys.modules])"],
        capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
