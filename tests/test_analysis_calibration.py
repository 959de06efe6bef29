"""Calibration of classification runs (predictive.csv rows `ece`, `brier`): known answers."""

import numpy as np

from interplay.analysis.predictive import brier_scores, expected_calibration_error


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.tile([0.7, 0.2, 0.1], (10, 1))
    labels = np.array([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, labels) < 1e-12


def test_ece_of_overconfident_predictions():
    """Half the points at confidence 0.9 with accuracy 0.5, half at 0.6 with accuracy 1: 0.5*0.4 + 0.5*0.4."""
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    assert abs(expected_calibration_error(probs, labels) - 0.4) < 1e-12


def test_brier_score():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(brier_scores(probs, np.array([0, 1, 0])), [0.0, 0.5, 2.0])
