"""The Frechet distance against closed forms for Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from transformers_vlavit.evaluation.frechet import (
    features_frechet_distance,
    frechet_distance,
    gaussian_statistics,
    trace_sqrt_product,
)


def random_covariance(rng, dimension):
    factor = rng.normal(size=(dimension, dimension))
    return factor @ factor.T + 0.1 * np.eye(dimension)


def test_diagonal_covariances_match_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_non_commuting_2x2_covariances_match_the_closed_form():
    """For a 2 x 2 matrix M with real non-negative eigenvalues, tr(sqrt(M)) = sqrt(tr M + 2 sqrt(det M))."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        s1, s2 = random_covariance(rng, 2), random_covariance(rng, 2)
        product = s1 @ s2
        closed = np.sqrt(np.trace(product) + 2 * np.sqrt(np.linalg.det(product)))
        assert trace_sqrt_product(s1, s2) == pytest.approx(closed, rel=1e-10)
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * closed
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_trace_of_the_product_square_root_matches_an_eigendecomposition_of_the_product():
    """What SciPy's sqrtm(S1 @ S2) gives: the eigenvalues of the (non-symmetric) product, square-rooted."""
    rng = np.random.default_rng(1)
    s1, s2 = random_covariance(rng, 12), random_covariance(rng, 12)
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.sqrt(eigenvalues.real).sum(), rel=1e-9)
    assert frechet_distance(np.zeros(12), s1, np.zeros(12), s1) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(np.ones(12), s1, np.zeros(12), s2) == pytest.approx(
        frechet_distance(np.zeros(12), s2, np.ones(12), s1), rel=1e-10
    )


def test_samples_of_two_gaussians_approach_their_closed_form_distance():
    rng = np.random.default_rng(2)
    mu1, mu2 = np.array([0.0, 0.0]), np.array([2.0, -1.0])
    s1, s2 = np.array([[1.0, 0.5], [0.5, 2.0]]), np.array([[0.5, -0.2], [-0.2, 0.3]])
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert features_frechet_distance(x, y) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=5e-3)


def test_statistics_use_the_unbiased_covariance():
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    mu, sigma = gaussian_statistics(features)
    centred = features - features.mean(axis=0)
    assert np.allclose(mu, [2.0, 2.0])
    assert np.allclose(sigma, centred.T @ centred / 2)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_statistics(features[:1])
