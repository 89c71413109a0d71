"""Sign-value independent decomposition (SVID): M ~ sign(M) * (low-rank envelope of |M|).

Used by LoRDBA (rank 1 per LoRA factor), DBF (rank 1) and MDBF (rank l). Because multiplying by
sign(M) is an isometry, ||M - M_hat|| = || |M| - envelope ||, so the relative error of a rank-1 SVID is
rho / sqrt(1 + rho^2) with rho = sqrt(sum_{i>=2} s_i^2) / s_1 of |M| (formats.md, section 2.4).
"""

from dataclasses import dataclass

import numpy as np


def signs(m: np.ndarray) -> np.ndarray:
    """sign(m) with 0 -> +1, as int8."""
    return np.where(m >= 0, 1, -1).astype(np.int8)


@dataclass(frozen=True)
class Svid:
    signs: np.ndarray  # int8 [n, m]
    left: np.ndarray  # [n, l] non-negative envelope columns (singular values folded in)
    right: np.ndarray  # [m, l]
    rho: float  # residual-to-magnitude ratio of |M| for this rank

    def envelope(self) -> np.ndarray:
        return self.left @ self.right.T

    def reconstruct(self) -> np.ndarray:
        return self.signs * self.envelope()


def svid(m: np.ndarray, rank: int = 1) -> Svid:
    """Best rank-`rank` envelope of |m| (truncated SVD); rank 1 gives the non-negative Perron pair."""
    mag = np.abs(np.asarray(m, np.float64))
    u, s, vt = np.linalg.svd(mag, full_matrices=False)
    rank = min(rank, len(s))
    # fix the sign gauge so each envelope column sums positive (rank 1: both vectors >= 0)
    flip = np.where(u[:, :rank].sum(axis=0) < 0, -1.0, 1.0)
    left = u[:, :rank] * flip * np.sqrt(s[:rank])
    right = vt[:rank].T * flip * np.sqrt(s[:rank])
    if rank == 1:
        left, right = np.abs(left), np.abs(right)
    head = float(np.sqrt(np.sum(s[:rank] ** 2)))
    rho = float(np.sqrt(np.sum(s[rank:] ** 2)) / head) if head > 0 else 0.0
    return Svid(signs(m), left, right, rho)


def project(m: np.ndarray, rank: int = 1, iters: int = 5, oversample: int = 4) -> np.ndarray:
    """The ADMM projection onto the SVID set: sign(m) * TSVD_rank(|m|), the truncated SVD taken by
    subspace iteration with oversampling (as MDBF does: 5 iterations, oversample 4), not a full SVD."""
    mag = np.abs(m)
    k = min(rank + oversample, *mag.shape)
    probe = np.random.default_rng(0).standard_normal((mag.shape[1], k))  # fixed: deterministic fits
    q = np.linalg.qr(mag @ probe)[0]
    for _ in range(iters):
        q = np.linalg.qr(mag @ (mag.T @ q))[0]
    u, s, vt = np.linalg.svd(q.T @ mag, full_matrices=False)
    approx = (q @ u[:, :rank]) * s[:rank] @ vt[:rank]
    if rank == 1:
        approx = np.abs(approx)  # the Perron pair is non-negative
    return np.where(m >= 0, 1.0, -1.0) * approx
