"""Ternary base-weight formats: BitNet b1.58 (absmean, per-tensor scale) and PTQTP trit-planes.

BitNet: T = RoundClip(W / mean|W|, -1, 1), W ~ gamma * T, stored in a real packing: "i2" (bitnet.cpp
I2_S size: 2 bpw + a 32-byte tail with the fp32 scale) or "tq1_0" (llama.cpp TQ1_0: 1.6875 bpw,
per-256-block fp16 scale, rows padded to 256).
PTQTP: W ~ diag(a1) T1 + diag(a2) T2, per-row fp16 scales; progressive init, then alternating 2x2 ridge
scale steps and exhaustive 9-candidate trit steps; both planes stored 2-bit ("i2") or TQ1_0-style
base-3 ("tq1_0": 5 trits/byte, scales kept per row, so no block scales are billed twice).
"""

from itertools import product
from typing import Any, Self

import numpy as np

from models.formats.base import FitReport, Packed, WeightFormat, rel_error
from models.formats.packing import (
    I2_TAIL_BYTES,
    TQ1_BLOCK,
    TQ1_BLOCK_BYTES,
    pack_i2,
    pack_tq1_0,
    unpack_i2,
    unpack_tq1_0,
)

PACKINGS = ("i2", "tq1_0")


def absmean_ternarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    gamma = float(np.mean(np.abs(w)))
    t = np.clip(np.rint(w / max(gamma, 1e-8)), -1, 1).astype(np.int8)
    return t, gamma


def _check_packing(packing: str) -> None:
    if packing not in PACKINGS:
        raise ValueError(f"unknown ternary packing '{packing}' (known: {', '.join(PACKINGS)})")


class Ternary(WeightFormat):
    """BitNet b1.58 absmean ternary weights with a per-tensor scale."""

    name = "ternary"

    def __init__(self, t: np.ndarray, gamma: float, packing: str = "i2", report: FitReport | None = None):
        _check_packing(packing)
        self.t, self.packing = t.astype(np.int8), packing
        # the stored scale: fp32 in the I2_S tail, fp16 per block in TQ1_0
        self.gamma = float(np.float32(gamma) if packing == "i2" else np.float16(gamma))
        self.report = report or FitReport(float("nan"))

    @classmethod
    def fit(cls, w: np.ndarray, *, packing: str = "i2") -> Self:
        t, gamma = absmean_ternarize(np.asarray(w, np.float64))
        fitted = cls(t, gamma, packing)
        fitted.report = FitReport(rel_error(w, fitted.reconstruct()),
                                  {"gamma": gamma, "zeros": float(np.mean(t == 0))})
        return fitted

    @property
    def shape(self) -> tuple[int, int]:
        return self.t.shape

    def reconstruct(self) -> np.ndarray:
        return (self.t * np.float32(self.gamma)).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.t.T.astype(np.float32)) * np.float32(self.gamma)  # add/sub/skip, then one scale

    def pack(self) -> Packed:
        if self.packing == "tq1_0":
            return {"tq1_0": pack_tq1_0(self.t * np.float32(self.gamma))}
        tail = np.zeros(I2_TAIL_BYTES, np.uint8)
        tail[:4] = np.array([self.gamma], np.float32).view(np.uint8)
        return {"trits": pack_i2(self.t), "tail": tail}

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        if "tq1_0" in packed:
            w = unpack_tq1_0(packed["tq1_0"], shape[1])
            gamma = float(np.abs(w).max()) if w.size else 0.0
            t = np.sign(w).astype(np.int8)
            return cls(t, gamma, "tq1_0")
        gamma = float(packed["tail"][:4].copy().view(np.float32)[0])
        return cls(unpack_i2(packed["trits"], shape[1]), gamma, "i2")

    def meta(self) -> dict[str, Any]:
        return {"packing": self.packing}

    def formula_bits(self) -> int:
        n, m = self.shape
        if self.packing == "tq1_0":  # 1.6875 bpw over rows padded to whole 256-blocks
            return n * (-(-m // TQ1_BLOCK)) * TQ1_BLOCK_BYTES * 8
        return 2 * n * (-(-m // 4) * 4) + 8 * I2_TAIL_BYTES


_PAIRS = np.array(list(product((-1, 0, 1), repeat=2)), np.float64)  # the 9 (t1, t2) candidates


def _ridge_scales(w: np.ndarray, t1: np.ndarray, t2: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row i: alpha_i = (S_i^T S_i + lambda_i I)^-1 S_i^T w_i with S_i = [t1_i, t2_i] (a 2x2 solve)."""
    g11, g22, g12 = (t1 * t1).sum(1), (t2 * t2).sum(1), (t1 * t2).sum(1)
    c1, c2 = (t1 * w).sum(1), (t2 * w).sum(1)
    reg = lam * np.maximum((g11 + g22) / 2, 1.0)  # adaptive: proportional to the row's Gram scale
    g11, g22 = g11 + reg, g22 + reg
    det = g11 * g22 - g12 * g12
    return (g22 * c1 - g12 * c2) / det, (g11 * c2 - g12 * c1) / det


def _best_trits(w: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive per-weight search over the 9 (t1, t2) pairs for the given row scales."""
    cand = a1[:, None, None] * _PAIRS[:, 0] + a2[:, None, None] * _PAIRS[:, 1]  # [n, 1, 9]
    best = np.argmin((w[:, :, None] - cand) ** 2, axis=2)
    return _PAIRS[best, 0], _PAIRS[best, 1]


class TritPlane(WeightFormat):
    """PTQTP: two ternary planes with per-row scales, W ~ a1 * T1 + a2 * T2."""

    name = "tritplane"

    def __init__(self, t1: np.ndarray, t2: np.ndarray, a1: np.ndarray, a2: np.ndarray, packing: str = "i2",
                 report: FitReport | None = None):
        _check_packing(packing)
        self.t1, self.t2 = t1.astype(np.int8), t2.astype(np.int8)
        self.a1, self.a2 = np.asarray(a1, np.float16), np.asarray(a2, np.float16)
        self.packing = packing
        self.report = report or FitReport(float("nan"))

    @classmethod
    def fit(cls, w: np.ndarray, *, packing: str = "i2", iters: int = 20, lam: float = 1e-4,
            tol: float = 1e-6) -> Self:
        w = np.asarray(w, np.float64)
        # progressive init: plane 1 ternarises W (per-row absmean), plane 2 its residual
        t1 = np.clip(np.rint(w / np.maximum(np.abs(w).mean(1, keepdims=True), 1e-12)), -1, 1)
        a1 = (t1 * w).sum(1) / np.maximum((t1 * t1).sum(1), 1)
        res = w - a1[:, None] * t1
        t2 = np.clip(np.rint(res / np.maximum(np.abs(res).mean(1, keepdims=True), 1e-12)), -1, 1)
        a1, a2 = _ridge_scales(w, t1, t2, lam)
        errors = [rel_error(w, a1[:, None] * t1 + a2[:, None] * t2)]
        for _ in range(iters):
            t1, t2 = _best_trits(w, a1, a2)
            a1, a2 = _ridge_scales(w, t1, t2, lam)
            errors.append(rel_error(w, a1[:, None] * t1 + a2[:, None] * t2))
            if errors[-2] - errors[-1] < tol:
                break
        fitted = cls(t1, t2, a1, a2, packing)
        fitted.report = FitReport(rel_error(w, fitted.reconstruct()),
                                  {"iterations": len(errors) - 1, "error_trace": [round(e, 6) for e in errors]})
        return fitted

    @property
    def shape(self) -> tuple[int, int]:
        return self.t1.shape

    def reconstruct(self) -> np.ndarray:
        return (self.a1.astype(np.float32)[:, None] * self.t1 + self.a2.astype(np.float32)[:, None] * self.t2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ((x @ self.t1.T.astype(np.float32)) * self.a1.astype(np.float32)
                + (x @ self.t2.T.astype(np.float32)) * self.a2.astype(np.float32))

    def pack(self) -> Packed:
        if self.packing == "tq1_0":
            # base-3 trit payload only (unit block scale); the real scales are the per-row a1, a2
            planes = {f"T{i}": pack_tq1_0(t.astype(np.float32))[:, _trit_bytes_mask(t.shape[1])]
                      for i, t in ((1, self.t1), (2, self.t2))}
        else:
            planes = {"T1": pack_i2(self.t1), "T2": pack_i2(self.t2)}
        return planes | {"alpha1": self.a1, "alpha2": self.a2}

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        if meta["packing"] == "tq1_0":
            t1, t2 = (_unpack_trits_tq1(packed[k], shape[1]) for k in ("T1", "T2"))
        else:
            t1, t2 = (unpack_i2(packed[k], shape[1]) for k in ("T1", "T2"))
        return cls(t1, t2, packed["alpha1"], packed["alpha2"], meta["packing"])

    def meta(self) -> dict[str, Any]:
        return {"packing": self.packing}

    def formula_bits(self) -> int:
        """Two planes (2 bpw, or 52/256 bytes per trit in base-3 blocks) + two fp16 scales per row."""
        n, m = self.shape
        plane = 2 * n * (-(-m // 4) * 4) if self.packing == "i2" else n * (-(-m // TQ1_BLOCK)) * 52 * 8
        return 2 * plane + 2 * 16 * n


def _trit_bytes_mask(cols: int) -> np.ndarray:
    """Column mask of the TQ1_0 bytes that hold trits (drops each block's 2-byte fp16 scale)."""
    blocks = -(-cols // TQ1_BLOCK)
    keep = np.ones(TQ1_BLOCK_BYTES, bool)
    keep[52:] = False
    return np.tile(keep, blocks)


def _unpack_trits_tq1(p: np.ndarray, cols: int) -> np.ndarray:
    rows, blocks = p.shape[0], p.shape[1] // 52
    full = np.zeros((rows, blocks, TQ1_BLOCK_BYTES), np.uint8)
    full[:, :, :52] = p.reshape(rows, blocks, 52)
    full[:, :, 52:] = np.array([1.0], np.float16).view(np.uint8)  # unit scale
    return np.rint(unpack_tq1_0(full.reshape(rows, -1), cols)).astype(np.int8)
