"""Closed-form least-squares refits of channel scales with the sign matrices frozen (formats.md 2.5).

For W ~ diag(a) S1 diag(mu) S2 diag(b): each of a, b is a per-row/per-column projection, and mu solves
the r x r system G mu = c with G = (S1^T diag(a^2) S1) o (S2 diag(b^2) S2^T).
"""

import numpy as np


def refit_middle(target: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """argmin_mu ||target - left diag(mu) right||_F."""
    g = (left.T @ left) * (right @ right.T)
    c = np.einsum("it,ij,tj->t", left, target, right)
    return np.linalg.lstsq(g, c, rcond=None)[0]


def refit_three(target: np.ndarray, s1: np.ndarray, s2: np.ndarray, a: np.ndarray, mu: np.ndarray,
                b: np.ndarray, sweeps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cycle the three exact updates of a (rows), b (columns) and mu (middle); error never increases."""
    for _ in range(sweeps):
        p = (s1 * mu) @ (s2 * b)
        a = np.einsum("ij,ij->i", target, p) / np.maximum(np.einsum("ij,ij->i", p, p), 1e-30)
        q = (a[:, None] * s1 * mu) @ s2
        b = np.einsum("ij,ij->j", target, q) / np.maximum(np.einsum("ij,ij->j", q, q), 1e-30)
        mu = refit_middle(target, a[:, None] * s1, s2 * b)
    return a, mu, b
