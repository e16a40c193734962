"""The verdict rules of the reports, on small synthetic result files (no training):
an incomplete grid gets no verdict and says how many runs finished, one seed is
inconclusive and printed without ±, a claimed size is tested with its uncertainty,
the Fig. 4 bias is shown relative to its noise, one std convention (ddof = 1)."""
import gzip
import json

import numpy as np
import pytest

from stochbp.experiments import gamma_toy, io, report, reporting

VERSIONS = {"python": "3", "jax": "0", "numpyro": "0", "optax": "0", "numpy": "0",
            "stochbp": "0", "platform": "x", "backend": "cpu"}


def write_gamma(out, seeds, losses, logvars, skip=()):
    """A gamma-toy results folder (toy 1, d = 2) with compressed runs: per estimator,
    loss[seed] is the constant exact loss of every step, logvar[seed] every evaluation's
    log-variance. Runs named in ``skip`` are left out (an unfinished grid)."""
    settings = gamma_toy.settings(True).replace(toys=(1,), dims=(2,), steps=4, eval_every=2)
    manifest = {"experiment": "gamma-toy", "quick": True, "settings": settings.to_dict(),
                "seeds": list(seeds), "estimators": list(losses), "precision": "float32",
                "versions": VERSIONS, "command": "stochbp run gamma-toy --quick"}
    (out / "runs").mkdir(parents=True)
    io.write_json(out / "manifest.json", manifest)
    for est in losses:
        for i, seed in enumerate(seeds):
            run_id = f"toy1-d2-{est}-seed{seed}"
            if run_id in skip:
                continue
            run = {"run_id": run_id, "experiment": "gamma-toy",
                   "config": {"toy": 1, "dim": 2, "estimator": est, "seed": seed},
                   "settings": manifest["settings"], "versions": VERSIONS,
                   "steps": [{"step": k, "loss": losses[est][i]} for k in range(4)],
                   "evals": [{"step": k, "loss": losses[est][i],
                              "grad_log_variance": logvars[est][i]} for k in (0, 2, 4)]}
            (out / "runs" / f"{run_id}.json.gz").write_bytes(
                gzip.compress(json.dumps(run).encode()))
    return out


CONVERGES, COMPETITIVE = "Fourier 'converges", "Fourier 'variance"


def claims(text):
    """{CONVERGES / COMPETITIVE: verdict} of the claims-table rows."""
    rows = [line.split(" | ") for line in text.splitlines()
            if line.startswith("| Fourier '")]
    return {key: row[-1].rstrip(" |") for row in rows for key in (CONVERGES, COMPETITIVE)
            if row[0][2:].startswith(key)}


def test_one_std_convention_and_no_plus_minus_for_one_seed():
    assert reporting.seed_stats([1.0, 3.0])[1] == pytest.approx(np.sqrt(2.0))  # ddof = 1
    assert reporting.mean_std_text([1.0, 3.0]) == "2 ± 1.4"
    assert reporting.mean_std_text([2.5]) == "2.5"
    assert np.isnan(reporting.difference([1.0], [0.0, 2.0])[1])


@pytest.mark.parametrize("diff, se, margin, verdict", [
    (1.0, 0.1, 0.5, "agrees"), (0.6, 0.1, 0.5, "inconclusive"),
    (0.2, 0.1, 0.5, "disagrees"), (0.3, 0.1, 0.0, "agrees"), (0.3, np.nan, 0.0,
                                                              "inconclusive")])
def test_a_claimed_margin_is_tested_with_its_uncertainty(diff, se, margin, verdict):
    assert reporting.exceeds_verdict(diff, se, margin).split(" ")[0] == verdict


@pytest.mark.parametrize("diff, se, verdict", [
    (1.7, 0.1, "agrees"), (0.4, 0.05, "disagrees"), (1.1, 0.1, "inconclusive"),
    (5.0, 0.2, "disagrees"), (1.7, np.nan, "inconclusive")])
def test_about_a_size_means_within_a_factor_two(diff, se, verdict):
    assert reporting.about_verdict(diff, se, 2.0).split(" ")[0] == verdict


def test_complete_grid_gives_verdicts(tmp_path):
    out = write_gamma(tmp_path / "g", [0, 1, 2],
                      {"fourier": [1.0, 1.01, 0.99], "pathwise": [2.0, 2.02, 1.98]},
                      {"fourier": [0.0, 0.1, -0.1], "pathwise": [-1.0, -1.1, -0.9]})
    text = report.gamma_report(out)
    assert "6 of 6 runs finished" in text and "Incomplete" not in text
    verdict = claims(text)
    assert verdict[CONVERGES] == "agrees"
    # Fourier's log-variance 1 nat above pathwise, well beyond the 0.5-nat margin
    assert verdict[COMPETITIVE] == "disagrees"
    assert "1 ± 0.01" in text and "{'" not in text  # ddof 1; settings as a table
    assert "| setting | value here | paper preset | what it is |" in text
    assert "| steps | 4 | 10000 | Adam steps per run |" in text
    assert "Choices the paper does not fix" in text


def test_variance_within_the_margin_but_unresolved_is_inconclusive(tmp_path):
    out = write_gamma(tmp_path / "g", [0, 1, 2],
                      {"fourier": [1.0, 1.01, 0.99], "pathwise": [2.0, 2.02, 1.98]},
                      {"fourier": [0.4, 1.4, -0.6], "pathwise": [0.0, 0.0, 0.0]})
    assert claims(report.gamma_report(out))[COMPETITIVE].startswith("inconclusive")


def test_incomplete_grid_says_how_many_runs_finished_and_gives_no_verdict(tmp_path):
    out = write_gamma(tmp_path / "g", [0, 1, 2],
                      {"fourier": [1.0, 1.01, 0.99], "pathwise": [2.0, 2.02, 1.98]},
                      {"fourier": [0.0, 0.1, -0.1], "pathwise": [-1.0, -1.1, -0.9]},
                      skip={"toy1-d2-pathwise-seed1", "toy1-d2-pathwise-seed2"})
    text = report.gamma_report(out)
    assert "4 of 6 runs finished" in text and "**Incomplete grid" in text
    verdicts = claims(text)
    assert len(verdicts) == 2
    for verdict in verdicts.values():
        assert verdict == "no verdict"
    assert "no verdict (4 of 6 runs finished for this comparison)" in text


def test_one_seed_is_inconclusive_and_printed_alone(tmp_path):
    out = write_gamma(tmp_path / "g", [0], {"fourier": [1.0], "pathwise": [2.0]},
                      {"fourier": [0.0], "pathwise": [-1.0]})
    text = report.gamma_report(out)
    assert set(claims(text).values()) == {"inconclusive"}
    rows = [line for line in text.splitlines() if line.startswith("| 1 | 2 |")]
    assert len(rows) == 2 and not any("±" in row for row in rows)
    assert "(n = 1)" in text


def test_compressed_runs_are_checked(tmp_path):
    out = write_gamma(tmp_path / "g", [0], {"fourier": [1.0]}, {"fourier": [0.0]})
    path = out / "runs" / "toy1-d2-fourier-seed0.json.gz"
    assert io.check_run(path)["run_id"] == "toy1-d2-fourier-seed0"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(io.DamagedFile, match="json.gz"):
        io.check_run(path)
    assert reporting.load_runs(out, warn=lambda msg: None) == []


def truncation(bias, noise, z, variance):
    rows = [{"estimator": f"fourier-n{n}", "truncation": n, "bias_norm": b,
             "bias_norm_scale_only": b, "bias_noise_norm": s, "max_abs_z": zz,
             "mean_variance": v} for n, b, s, zz, v in zip(range(1, 7), bias, noise, z,
                                                          variance)]
    return {"rows": rows, "theta_from": "fourier-n8-seed0", "epoch": 100,
            "scale_times_max_x": 1.0, "draws": 10, "num_samples": 5,
            "reference": {"samples": 100}}


def test_fig4_bias_is_shown_relative_to_its_noise():
    """A huge ‖bias‖ with a huger noise level is no evidence of bias: the table gives
    the ratio, and the verdict rests on z, not on the size of ‖bias‖."""
    t = truncation(bias=[0.5, 0.5, 0.5, 0.6, 7.8e7, 12.0], noise=[0.6, 0.6, 0.6, 0.6, 9e7, 1.0],
                   z=[2.0, 2.1, 2.2, 2.3, 2.4, 9.0], variance=[1.0, 1.0, 1.1, 1.2, 1e16, 2.0])
    lines = report._truncation_section(t)
    row = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines
           if line.startswith("| fourier-n")}
    assert row["fourier-n5"][4] == "0.87" and row["fourier-n6"][4] == "12.00"
    verdicts = [line for line in lines if line.startswith("| Fig. 4")]
    assert len(verdicts) == 2  # both readings of the truncation level
    assert "levels with a significant bias: [6]" in verdicts[0]
    assert "MC noise level, the norm of the per-coordinate standard errors" in "".join(lines)


def test_pooling_outcome_is_reported_either_way():
    def rows(printed_faster):
        out = []
        for d in (1, 10):
            gain = 0.5 if (printed_faster and d > 1) else 0.0
            out += [{"dim": d, "estimator": "pathwise", "mean_loss": [2.0, 2.01, 1.99],
                     "final_loss": [1.0] * 3, "log_noise_to_signal": -2.0},
                    {"dim": d, "estimator": "printed",
                     "mean_loss": [2.0 - gain, 2.01 - gain, 1.99 - gain],
                     "final_loss": [1.0] * 3, "log_noise_to_signal": -2.0}]
        return {"rows": out, "seeds": [0, 1, 2], "steps": 4, "draws": 10}
    yes = "\n".join(report._pooling_section(rows(True)))
    assert "supported for d > 1" in yes and "at d = 1, where there is nothing to pool" in yes
    no = "\n".join(report._pooling_section(rows(False)))
    assert "mixed: d=1 inconclusive, d=10 inconclusive" in no
