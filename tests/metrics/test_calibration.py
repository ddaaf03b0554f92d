"""ECE and temperature scaling on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnseg.metrics.calibration import apply_temperature, expected_calibration_error, fit_temperature, scaled


def test_ece_is_the_gap_between_confidence_and_accuracy():
    p = np.tile([[0.8, 0.2]], (10, 1))
    eight_right = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(p, eight_right) == pytest.approx(0.0)
    assert expected_calibration_error(p, np.zeros(10, dtype=int)) == pytest.approx(0.2)


def test_the_fitted_temperature_makes_an_overconfident_network_honest():
    # confidence 0.99 where 70% are right: T solves (0.01/0.99)^(1/T) = 3/7, T = ln 99 / ln(7/3)
    p = np.tile([[0.99, 0.01]], (100, 1))
    labels = np.array([0] * 70 + [1] * 30)
    temperature = fit_temperature(p, labels)
    assert temperature == pytest.approx(math.log(99) / math.log(7 / 3), rel=1e-3)
    assert scaled(p, temperature)[0, 0] == pytest.approx(0.7, abs=1e-3)
    assert expected_calibration_error(scaled(p, temperature), labels) < expected_calibration_error(p, labels)


def test_the_temperature_keeps_the_mask_and_is_the_identity_at_one():
    p = torch.tensor([[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]])
    assert apply_temperature(p, 1.0) is p
    hot = apply_temperature(p, 3.0)
    assert torch.equal(hot.argmax(0), p.argmax(0))
    assert torch.allclose(hot.sum(0), torch.ones(2))
    assert hot[0, 0] == pytest.approx(0.6 ** (1 / 3) / (0.6 ** (1 / 3) + 0.3 ** (1 / 3) + 0.1 ** (1 / 3)), rel=1e-5)
