"""Estimator labels: the one naming scheme of every experiment, result file and report.

A label is the name of the ``stochbp`` function that builds the estimator, optionally
followed by one option in the form ``-<letter><positive integer>``:

* ``-sS``: S samples per gradient estimate (``num_samples=S``), e.g. ``fourier-s5``;
* ``-nN``: the Fourier rule keeping N terms of the paper's Eq. 19, i.e.
  ``stochbp.fourier(order=2N)``, e.g. ``fourier-n4``.

So ``score_function``, ``gumbel_softmax``, ``pathwise``, ``grg``, ``rebar``, ``relax``,
``arm``, ``disarm`` and ``fourier`` name estimators as the library does. Earlier versions
wrote ``gumbel-softmax``: :func:`canonical` maps it to ``gumbel_softmax`` on the command
line and when reading old result files.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

# option letter -> field of Label
OPTIONS = {"s": "samples", "n": "terms"}
# labels of earlier versions -> their label in this scheme
ALIASES = {"gumbel-softmax": "gumbel_softmax"}
_PATTERN = re.compile(r"^([a-z_]+)(?:-([a-z])([1-9][0-9]*))?$")


@dataclasses.dataclass(frozen=True)
class Label:
    """A parsed label: the stochbp estimator's name and its option, if any."""

    estimator: str
    samples: Optional[int] = None  # -sS
    terms: Optional[int] = None  # -nN

    def __str__(self) -> str:
        for letter, field in OPTIONS.items():
            if getattr(self, field) is not None:
                return f"{self.estimator}-{letter}{getattr(self, field)}"
        return self.estimator


def canonical(label: str) -> str:
    return ALIASES.get(label, label)


def parse(label: str) -> Label:
    """``"fourier-s5"`` -> ``Label("fourier", samples=5)``."""
    match = _PATTERN.match(canonical(label))
    if match is None or (match.group(2) is not None and match.group(2) not in OPTIONS):
        raise ValueError(f"estimator label must be a stochbp estimator name, optionally "
                         f"with -sS (samples) or -nN (Fourier terms); got label={label!r}")
    name, letter, number = match.groups()
    return Label(name, **({OPTIONS[letter]: int(number)} if letter else {}))
