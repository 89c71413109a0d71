"""Double binary factorisation of base weights: DBF and MDBF (formats.md sections 4 and 5).

MDBF: W ~ sum_p F_p G_p with F = S_A o (A_amp Q_U^T) [n, r] and G = S_B o (Q_V B_amp^T) [r, m]:
shared sign bases with rank-l envelopes, P residual paths. DBF is the (l, P) = (1, 1) case stored as
diag(a) S_A diag(mu) S_B diag(b) with the two middle envelopes merged into one mu.
Fit: SVD init (U' = U_r S^1/2, V' = V_r S^1/2, signs + rank-l envelope SVD of |U'|, |V'|), then
alternating ADMM refinement of F and G with the SVID projection, keeping the best iterate.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from models.formats.base import FitReport, Packed, WeightFormat, rel_error
from models.formats.packing import pack_signs, unpack_signs
from models.formats.scales import refit_three
from models.formats.svid import project, svid


def _pad8(k: int) -> int:
    return -(-k // 8) * 8  # sign rows are stored in whole bytes


def dbf_bits(n: int, m: int, k: int) -> int:
    """k(n+m) sign bits (rows padded to bytes) + 16(n+k+m) fp16 scale bits."""
    return n * _pad8(k) + k * _pad8(m) + 16 * (n + k + m)


def mdbf_bits(n: int, m: int, r: int, l: int, paths: int) -> int:  # noqa: E741
    """P [r(n+m) + 16 l (n+m+2r)] (OneComp's bpw_from_rank), sign rows padded to bytes."""
    return paths * (n * _pad8(r) + r * _pad8(m) + 16 * l * (n + m + 2 * r))


def _largest_within(budget_bits: float, bits_of: Callable[[int], int], start: int) -> int:
    k = max(1, start)
    while k > 1 and bits_of(k) > budget_bits:
        k -= 1
    return k


def dbf_rank(n: int, m: int, bpw: float) -> int:
    """Largest k whose stored bits fit bpw * n * m (from k = (b nm - 16(n+m)) / (n+m+16))."""
    start = int((bpw * n * m - 16 * (n + m)) // (n + m + 16))
    return _largest_within(bpw * n * m, lambda k: dbf_bits(n, m, k), start)


def mdbf_rank(n: int, m: int, bpw: float, l: int, paths: int) -> int:  # noqa: E741
    """OneComp's rank_from_bpw, r = (b nm / P - 16 l (n+m)) / ((n+m) + 32 l), kept within the budget."""
    start = int((bpw * n * m / paths - 16 * l * (n + m)) // ((n + m) + 32 * l))
    return _largest_within(bpw * n * m, lambda r: mdbf_bits(n, m, r, l, paths), start)


def _admm_left(w: np.ndarray, g: np.ndarray, z: np.ndarray, u: np.ndarray, l: int, rho: float,  # noqa: E741
               inner: int = 3, reg: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """min_F ||W - F G||^2 + lam ||F||^2 with F in the SVID set (sign o rank-l envelope), by ADMM from the
    projected iterate z and the scaled dual u of the previous outer iteration; returns (F, the dual)."""
    xx = g @ g.T
    scale = float(np.mean(np.diag(xx))) or 1.0
    xx += reg * scale * np.eye(len(xx))
    xy = w @ g.T
    y = np.linalg.solve(xx + rho * scale * np.eye(len(xx)), (xy + rho * scale * (z - u)).T).T
    step = np.linalg.inv(xx + scale * np.eye(len(xx)))
    for _ in range(inner):
        z = project(y + u, l)
        u = u + y - z
        y = (xy + scale * (z - u)) @ step
    return project(y + u, l), u


def _factor_path(w: np.ndarray, r: int, l: int, iters: int) -> tuple[np.ndarray, np.ndarray, list[float]]:  # noqa: E741
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    f = project(u[:, :r] * np.sqrt(s[:r]), l)
    g = project(np.sqrt(s[:r])[:, None] * vt[:r], l)
    best = (rel_error(w, f @ g), f, g)
    trace = [best[0]]
    # the scaled duals persist across outer iterations (ADMM's memory of the constraint violation); each is
    # rescaled with its factor when the gauge is fixed
    uf, ug = np.zeros_like(f), np.zeros_like(g)
    for it in range(iters):
        rho = 0.03 + 0.97 * min(1.0, it / max(iters - 3, 1)) ** 3
        # fix the scale gauge: normalise the fixed factor, the updated one absorbs the norms
        norms = np.maximum(np.linalg.norm(g, axis=1), 1e-12)
        g, ug = g / norms[:, None], ug / norms[:, None]
        f, uf = _admm_left(w, g, f * norms, uf * norms, l, rho)
        norms = np.maximum(np.linalg.norm(f, axis=0), 1e-12)
        f, uf = f / norms, uf / norms
        gt, ugt = _admm_left(w.T, f.T, g.T * norms, ug.T * norms, l, rho)
        g, ug = gt.T, ugt.T
        err = rel_error(w, f @ g)
        trace.append(err)
        if err < best[0]:
            best = (err, f, g)
    return best[1], best[2], trace


def _importance(importance: np.ndarray | None, m: int) -> np.ndarray:
    """Input-channel weights normalised to mean 1 (floored at 1e-3 of it: a dead channel keeps a scale)."""
    if importance is None:
        return np.ones(m)
    s = np.asarray(importance, np.float64).reshape(-1)
    if s.shape != (m,) or not np.all(np.isfinite(s)) or np.any(s < 0) or not s.any():
        raise ValueError(f"importance needs {m} finite non-negative weights, not all zero")
    s = s / s.mean()
    return np.maximum(s, 1e-3)


def _weighted_error(w: np.ndarray, w_hat: np.ndarray, s: np.ndarray, importance: np.ndarray | None) -> dict:
    return {} if importance is None else {"weighted_rel_error": rel_error(w * s, w_hat * s)}


@dataclass
class MdbfPath:
    sa: np.ndarray  # int8 [n, r]
    sb: np.ndarray  # int8 [r, m]
    a_amp: np.ndarray  # fp16 [n, l]
    q_u: np.ndarray  # fp16 [r, l]
    q_v: np.ndarray  # fp16 [r, l]
    b_amp: np.ndarray  # fp16 [m, l]

    def f(self) -> np.ndarray:
        return self.sa * (self.a_amp.astype(np.float32) @ self.q_u.astype(np.float32).T)

    def g(self) -> np.ndarray:
        return self.sb * (self.q_v.astype(np.float32) @ self.b_amp.astype(np.float32).T)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each sign matrix applied once to an l-column right-hand side, envelopes as channel scales."""
        sa, sb = self.sa.T.astype(np.float32), self.sb.T.astype(np.float32)
        qv, bq = self.q_v.astype(np.float32), self.b_amp.astype(np.float32)
        qu, aa = self.q_u.astype(np.float32), self.a_amp.astype(np.float32)
        z = sum(qv[:, j] * ((x * bq[:, j]) @ sb) for j in range(qv.shape[1]))
        return sum(aa[:, j] * ((z * qu[:, j]) @ sa) for j in range(qu.shape[1]))


class Mdbf(WeightFormat):
    """Multi-envelope double binary factorisation: P paths, rank-l envelopes, 1-bit sign bases."""

    name = "mdbf"

    def __init__(self, paths: list[MdbfPath], report: FitReport | None = None):
        self.paths = paths
        self.report = report or FitReport(float("nan"))

    @classmethod
    def fit(cls, w: np.ndarray, *, bpw: float = 1.0, l: int = 2, paths: int = 1, iters: int = 20,  # noqa: E741
            importance: np.ndarray | None = None) -> Self:
        """`importance` [in]: per-input-channel weights (calibration: the RMS of each input channel); the fit
        minimises ||(W - W_hat) diag(importance)|| and folds 1 / importance into the right envelope."""
        w0 = np.asarray(w, np.float64)
        s = _importance(importance, w0.shape[1])
        w = w0 * s
        n, m = w.shape
        r = mdbf_rank(n, m, bpw, l, paths)
        residual, fitted, traces = w.copy(), [], []
        for _ in range(paths):
            f, g, trace = _factor_path(residual, r, l, iters)
            ef, eg = svid(f, l), svid(g, l)
            path = MdbfPath(ef.signs, eg.signs, *(e.astype(np.float16) for e in (ef.left, ef.right, eg.left, eg.right)))
            residual = residual - path.f() @ path.g()
            path.b_amp = (eg.right / s[:, None]).astype(np.float16)  # W' = W diag(s): undo it on the input side
            fitted.append(path)
            traces.append([round(e, 5) for e in trace])
        out = cls(fitted)
        out.report = FitReport(rel_error(w0, out.reconstruct()),
                               {"rank": r, "l": l, "paths": paths, "bpw_budget": bpw, "iters": iters,
                                "weighted": importance is not None, "error_trace": traces,
                                **_weighted_error(w0, out.reconstruct(), s, importance)})
        return out

    @property
    def shape(self) -> tuple[int, int]:
        return self.paths[0].sa.shape[0], self.paths[0].sb.shape[1]

    def reconstruct(self) -> np.ndarray:
        return sum(p.f() @ p.g() for p in self.paths).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return sum(p.forward(x) for p in self.paths)

    def pack(self) -> Packed:
        out: Packed = {}
        for i, p in enumerate(self.paths):
            out |= {f"p{i}.signs_A": pack_signs(p.sa), f"p{i}.signs_B": pack_signs(p.sb), f"p{i}.A_amp": p.a_amp,
                    f"p{i}.Q_U": p.q_u, f"p{i}.Q_V": p.q_v, f"p{i}.B_amp": p.b_amp}
        return out

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        r = int(meta["rank"])
        return cls([MdbfPath(unpack_signs(packed[f"p{i}.signs_A"], r), unpack_signs(packed[f"p{i}.signs_B"], shape[1]),
                             packed[f"p{i}.A_amp"], packed[f"p{i}.Q_U"], packed[f"p{i}.Q_V"], packed[f"p{i}.B_amp"])
                    for i in range(int(meta["paths"]))])

    def meta(self) -> dict[str, Any]:
        return {"rank": self.paths[0].sa.shape[1], "l": self.paths[0].q_u.shape[1], "paths": len(self.paths)}

    def formula_bits(self) -> int:
        """P [r(n+m) + 16 l (n+m+2r)] (OneComp's bpw_from_rank), sign rows padded to whole bytes."""
        n, m = self.shape
        meta = self.meta()
        return mdbf_bits(n, m, meta["rank"], meta["l"], meta["paths"])


class Dbf(WeightFormat):
    """Double binary factorisation: W ~ diag(a) S_A diag(mu) S_B diag(b), k from a bpw budget."""

    name = "dbf"

    def __init__(self, sa: np.ndarray, sb: np.ndarray, a: np.ndarray, mu: np.ndarray, b: np.ndarray,
                 report: FitReport | None = None):
        self.sa, self.sb = sa.astype(np.int8), sb.astype(np.int8)
        self.a, self.mu, self.b = (np.asarray(v, np.float16) for v in (a, mu, b))
        self.report = report or FitReport(float("nan"))

    @classmethod
    def fit(cls, w: np.ndarray, *, bpw: float = 1.0, iters: int = 20, sweeps: int = 3,
            importance: np.ndarray | None = None) -> Self:
        """`importance` as in Mdbf.fit: the fit weights input channels, b absorbs 1 / importance."""
        w0 = np.asarray(w, np.float64)
        s = _importance(importance, w0.shape[1])
        w = w0 * s
        n, m = w.shape
        k = dbf_rank(n, m, bpw)
        f, g, trace = _factor_path(w, k, 1, iters)
        ef, eg = svid(f), svid(g)
        a, mu, b = ef.left[:, 0], ef.right[:, 0] * eg.left[:, 0], eg.right[:, 0]
        sa, sb = ef.signs.astype(np.float64), eg.signs.astype(np.float64)
        a, mu, b = refit_three(w, sa, sb, a, mu, b, sweeps)
        out = cls(ef.signs, eg.signs, a, mu, b / s)
        out.report = FitReport(rel_error(w0, out.reconstruct()),
                               {"k": k, "bpw_budget": bpw, "iters": iters, "weighted": importance is not None,
                                "error_trace": [round(e, 5) for e in trace],
                                **_weighted_error(w0, out.reconstruct(), s, importance)})
        return out

    @property
    def shape(self) -> tuple[int, int]:
        return self.sa.shape[0], self.sb.shape[1]

    def reconstruct(self) -> np.ndarray:
        f32 = np.float32
        return ((self.a.astype(f32)[:, None] * self.sa * self.mu.astype(f32)) @ (self.sb * self.b.astype(f32)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x*b -> S_B -> *mu -> S_A -> *a: two sign accumulations, three channel scalings."""
        h = (x * self.b.astype(np.float32)) @ self.sb.T.astype(np.float32)
        return ((h * self.mu.astype(np.float32)) @ self.sa.T.astype(np.float32)) * self.a.astype(np.float32)

    def pack(self) -> Packed:
        return {"signs_A": pack_signs(self.sa), "signs_B": pack_signs(self.sb), "a": self.a, "mu": self.mu,
                "b": self.b}

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        k = int(meta["k"])
        return cls(unpack_signs(packed["signs_A"], k), unpack_signs(packed["signs_B"], shape[1]), packed["a"],
                   packed["mu"], packed["b"])

    def meta(self) -> dict[str, Any]:
        return {"k": self.sa.shape[1]}

    def formula_bits(self) -> int:
        """k(n+m) sign bits + 16(n+k+m) fp16 scale bits, sign rows padded to whole bytes."""
        n, m = self.shape
        return dbf_bits(n, m, self.sa.shape[1])
