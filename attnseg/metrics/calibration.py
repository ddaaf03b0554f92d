"""Calibration of class probabilities: the expected calibration error, and temperature scaling.

A network trained with cross-entropy and Dice is usually over-confident: of the voxels it gives 0.99, far
fewer than 99% are right. Temperature scaling (Guo et al., ICML 2017) divides the logits by one number T
fitted on held-out cases; the argmax (the mask) does not change, the probabilities become honest. From
probabilities p alone: softmax(log p / T) = p^(1/T) / sum_k p_k^(1/T) (log p differs from the logits by
one constant per voxel, which softmax ignores), so the temperature applies to the averaged probabilities
that sliding windows and mirroring produce, exactly as it was fitted on them.

ECE (Naeini et al., AAAI 2015): the voxels are binned by their confidence (the largest probability), and
the gaps between each bin's mean confidence and its accuracy are averaged, weighted by the bin's share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ECE_BINS = 15
# The temperature is searched in [e^-3, e^3] = [0.050, 20.09] (log scale, golden section on the negative
# log-likelihood).
LOG_T_RANGE = (-3.0, 3.0)
MAX_VOXELS = 2_000_000  # voxels a fit or an ECE uses at most (a strided sample of the cases')
EPS = 1e-7


def apply_temperature(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)`` renormalised over the class axis 0: calibrated probabilities (unchanged for T = 1)."""
    if temperature == 1.0:
        return probabilities
    scaled = torch.log(probabilities.clamp_min(EPS)) / temperature
    return torch.softmax(scaled, dim=0)


def pooled_sample(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """((N, K) probabilities, (N,) class indices) from several cases, at most :data:`MAX_VOXELS` voxels."""
    total = sum(int(np.prod(label.shape)) for label in labels)
    step = max(1, total // MAX_VOXELS)
    p = np.concatenate([np.asarray(pr).reshape(pr.shape[0], -1)[:, ::step].T for pr in probabilities])
    y = np.concatenate([np.asarray(label).reshape(-1)[::step] for label in labels]).astype(np.int64)
    return p.astype(np.float64), y


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of ``probabilities`` (N, K) against class indices ``labels`` (N,): 0 is perfectly calibrated."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(float(confidence[inside].mean()) - float(correct[inside].mean()))
    return float(error)


def scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`apply_temperature` for (N, K) arrays."""
    logits = np.log(np.clip(probabilities, EPS, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = scaled(probabilities, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, EPS, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, iterations: int = 40) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (golden section on log T;
    the likelihood is unimodal in it)."""
    low, high = LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa = negative_log_likelihood(probabilities, labels, float(np.exp(a)))
    fb = negative_log_likelihood(probabilities, labels, float(np.exp(b)))
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(probabilities, labels, float(np.exp(a)))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(probabilities, labels, float(np.exp(b)))
    return float(np.exp((low + high) / 2.0))
