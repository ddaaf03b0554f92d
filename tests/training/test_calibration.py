"""What training says of its calibration: a temperature at the end of its search range is named."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_a_temperature_that_raises_the_ece_it_was_fitted_on_is_not_applied():
    """70 voxels at 0.95, all right, and 30 at 0.99, half right. With 15 bins both fall in the top bin:
    confidence 0.7 * 0.95 + 0.3 * 0.99 = 0.962, accuracy 0.85, ECE 0.112. The likelihood's temperature (2.55)
    spreads them to 0.760 (bin 12, accuracy 1: 0.7 * 0.240) and 0.859 (bin 13, accuracy 0.5: 0.3 * 0.359):
    ECE 0.276, worse. The fit is recorded, temperature 1 is applied."""
    from attnseg.training.calibration import temperature_record

    p = np.array([[0.95, 0.05]] * 70 + [[0.99, 0.01]] * 30)
    y = np.array([0] * 70 + [0] * 15 + [1] * 15)
    record = temperature_record(p, y, ["case"])
    assert record["ece_before"] == pytest.approx(0.112, abs=1e-3)
    assert record["ece_fitted"] == pytest.approx(0.7 * 0.240 + 0.3 * 0.359, abs=2e-3)
    assert record["kept"] is False and record["temperature"] == 1.0 and record["fitted_temperature"] > 2
    assert record["ece_after"] == record["ece_before"]
    line = calibration_line(record)
    assert line.startswith("calibration: temperature 2.55 fitted on 1 validation case(s) would raise the ECE")
    assert line.endswith("0.112 -> 0.275; not applied (temperature 1)")
    kept = temperature_record(np.tile([[0.99, 0.01]], (100, 1)), np.array([0] * 70 + [1] * 30), ["case"])
    assert kept["kept"] is True and kept["temperature"] == kept["fitted_temperature"]
