"""Frechet distance between two Gaussians fitted to feature sets (FID / FVD).

As the standard implementations compute it: the mean and the unbiased covariance (``np.cov(rowvar=False)``)
of each feature set, then ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` in float64. The trace term
is computed as TF-GAN's ``trace_sqrt_product`` does (used by the original FVD code and by VideoGPT's): the
trace of the square root of the symmetric ``S1^(1/2) S2 S1^(1/2)``, whose eigenvalues are those of ``S1 S2``,
so it equals the trace of ``scipy.linalg.sqrtm(S1 @ S2)`` that TTUR / ``pytorch-fid`` / StyleGAN-V take
(tiny negative eigenvalues from round-off are clipped to zero, where SciPy would return a small imaginary part
that those implementations discard). No SciPy is needed.
"""

from __future__ import annotations

import numpy as np


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``features [N, D]`` -> ``(mean [D], unbiased covariance [D, D])`` in float64 (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"need at least 2 feature vectors [N, D] for a covariance, got shape {features.shape}"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 @ sigma2)^(1/2))`` for symmetric positive semi-definite matrices."""
    root = _symmetric_sqrt(sigma1)
    values = np.linalg.eigvalsh(root @ sigma2 @ root)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``; means ``[D]``, covariances ``[D, D]``."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: means {mu1.shape}/{mu2.shape}, covariances {sigma1.shape}/{sigma2.shape}"
        )
    difference = mu1 - mu2
    return float(
        difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    )


def features_frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance of the Gaussians fitted to two feature sets ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))
