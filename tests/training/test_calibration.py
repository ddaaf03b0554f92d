"""What training says of its calibration: a temperature at the end of its search range is named."""

from __future__ import annotations

import math

import numpy as np

from attnseg.metrics.calibration import fit_temperature
from attnseg.training.calibration import calibration_line, range_limit


def _result(temperature: float) -> dict:
    return {
        "temperature": temperature,
        "at_range_limit": range_limit(temperature),
        "ece_before": 0.3,
        "ece_after": 0.1,
        "fitted_on": ["a", "b"],
    }


def test_a_fit_that_flattens_as_far_as_allowed_is_at_the_top():
    # confident and always wrong: the likelihood keeps rising as the probabilities flatten, up to e^3
    p = np.tile([[0.9, 0.1]], (50, 1))
    temperature = fit_temperature(p, np.ones(50, dtype=int))
    assert temperature == math.exp(3.0) or abs(math.log(temperature) - 3.0) < 1e-3
    assert range_limit(temperature) == "high"
    assert "at the top of its range: the model is barely trained" in calibration_line(_result(temperature))


def test_an_ordinary_fit_is_within_the_range():
    # confidence 0.99 where 70% are right: T = ln 99 / ln(7/3) = 5.42, well inside [e^-3, e^3]
    p = np.tile([[0.99, 0.01]], (100, 1))
    temperature = fit_temperature(p, np.array([0] * 70 + [1] * 30))
    assert range_limit(temperature) is None
    line = calibration_line(_result(temperature))
    assert line == "calibration: temperature 5.42 on 2 validation case(s); ECE 0.300 -> 0.100"
    assert range_limit(math.exp(-3.0)) == "low" and range_limit(1.0) is None
