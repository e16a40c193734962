"""`stochbp demo`: every public estimator factory is shown beside the exact gradient,
and the unbiased ones agree with it."""
import inspect
import typing

import numpy as np
import pytest

import stochbp
from stochbp import cli, demo
from stochbp._src import estimators as estimator_modules


def public_factories() -> set:
    """The names in stochbp.__all__ of functions that return an estimator."""
    names = set()
    for name in stochbp.__all__:
        obj = getattr(stochbp, name)
        if inspect.isfunction(obj):
            ret = typing.get_type_hints(obj).get("return")
            if isinstance(ret, type) and issubclass(ret, stochbp.Estimator):
                names.add(name)
    return names


def estimator_classes() -> set:
    """Every estimator class the library defines."""
    seen, todo = set(), [stochbp.Estimator]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith(estimator_modules.__name__):
                seen.add(sub)
    return seen


def test_the_demo_covers_every_estimator():
    factories = public_factories()
    assert {"fourier", "fourier_exponential", "pathwise", "score_function", "grg",
            "measure_valued", "delta_method", "gumbel_softmax", "arm", "disarm",
            "rebar", "relax"} <= factories
    ests = [e for case in demo.cases() for e in case.estimators]
    used = {e.name.split("(")[0] for e in ests}
    assert factories <= used, factories - used
    assert estimator_classes() <= {type(e) for e in ests}
    baselines = {e.baseline for e in ests if isinstance(e, type(stochbp.score_function()))}
    assert {None, "leave_one_out", "moving_average"} <= baselines
    assert any(isinstance(b, float) for b in baselines)
    assert any("Mixture" in case.name for case in demo.cases())
    assert any(e.name.startswith("rebar(tune=True)") for e in ests)


@pytest.fixture(scope="module")
def shown():
    lines = []
    # two cases keep the test short (compiling is most of the time); the others run in
    # `stochbp demo`, and each estimator is tested against exact gradients elsewhere
    rows = demo.run(num_draws=200, out=lines.append, names=("Delta", "Bernoulli"))
    return rows, lines


def test_estimates_are_printed_beside_the_exact_gradient(shown):
    rows, lines = shown
    assert {r["distribution"] for r in rows} == {"Delta", "Bernoulli"}
    text = "\n".join(lines)
    for r in rows:
        assert r["estimator"] in text
        assert f"d/d{r['parameter']:<11} exact" in text
    for r in rows:
        if r["factory"] == "gumbel_softmax":  # the relaxed objective's gradient
            assert r["verdict"] in ("ok", demo.BIASED_BY_DESIGN["gumbel_softmax"])
        else:
            assert r["verdict"] == "ok" and r["z"] < 4, r
    by_name = {r["estimator"]: r for r in rows if r["distribution"] == "Bernoulli"}
    # relax runs with random network weights, not as rebar (its zero-output start)
    assert by_name["relax"]["mean"] != by_name["rebar"]["mean"]
    for r in rows:
        if r["distribution"] == "Delta":  # Eq. 16 is backpropagation: no noise at all
            np.testing.assert_allclose(r["mean"], r["exact"], rtol=1e-12)
            assert max(r["stderr"]) < 1e-12


@pytest.mark.parametrize("flag", ["--draws", "--samples"])
def test_demo_refuses_too_few_draws_in_one_line(flag, capsys):
    assert cli.main(["demo", flag, "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"stochbp: error: {flag} must be at least 2; got {flag} 1\n"
