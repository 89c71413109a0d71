"""Adapter formats: fp16 LoRA (PEFT semantics) and LoRDBA (both factors as signs + channel scales).

Both represent dW = scaling * B @ A with A [r, in], B [out, r]. LoRDBA (formats.md section 6) keeps
dW ~ diag(u) S_B diag(mu) S_A diag(v) ("channel" layout: u [out], mu [r], v [in]) or
dW ~ S_B diag(mu) S_A ("rank" layout: mu [r] only). The forward is two sign accumulations with
channel scalings in between: u * S_B(mu * S_A(v * x)).
"""

from typing import Any, Self

import numpy as np

from models.formats.base import FitReport, Packed, WeightFormat, rel_error
from models.formats.packing import pack_signs, unpack_signs
from models.formats.scales import refit_middle, refit_three
from models.formats.svid import signs, svid

LAYOUTS = ("channel", "rank")


def peft_scaling(alpha: float, r: int, rslora: bool = False) -> float:
    """PEFT's LoRA scaling: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA."""
    return alpha / (r**0.5 if rslora else r)


class LoraFp16(WeightFormat):
    """Plain LoRA with fp16 factors: the baseline every adapter format is compared against."""

    name = "lora-fp16"

    def __init__(self, a: np.ndarray, b: np.ndarray, scaling: float):
        self.a = np.asarray(a, np.float16)
        self.b = np.asarray(b, np.float16)
        self.scaling = float(scaling)
        self.report = FitReport(rel_error(np.asarray(b, np.float64) @ a, self.b.astype(np.float64) @ self.a))

    @classmethod
    def fit(cls, a: np.ndarray, b: np.ndarray, scaling: float) -> Self:
        return cls(a, b, scaling)

    @property
    def shape(self) -> tuple[int, int]:
        return self.b.shape[0], self.a.shape[1]

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    def reconstruct(self) -> np.ndarray:
        return self.scaling * (self.b.astype(np.float32) @ self.a.astype(np.float32))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.scaling * ((x @ self.a.T.astype(np.float32)) @ self.b.T.astype(np.float32))

    def pack(self) -> Packed:
        return {"lora_A": self.a, "lora_B": self.b}

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        return cls(packed["lora_A"], packed["lora_B"], meta["scaling"])

    def meta(self) -> dict[str, Any]:
        return {"scaling": self.scaling}

    def formula_bits(self) -> int:
        n, m = self.shape
        return 16 * self.rank * (m + n)


class Lordba(WeightFormat):
    """LoRDBA adapter: dW = diag(u) S_B diag(mu) S_A diag(v), signs packed 1 bit, scales fp16."""

    name = "lordba"

    def __init__(self, sa: np.ndarray, sb: np.ndarray, u: np.ndarray | None, mu: np.ndarray,
                 v: np.ndarray | None, report: FitReport | None = None):
        self.sa, self.sb = sa.astype(np.int8), sb.astype(np.int8)
        self.layout = "rank" if u is None else "channel"
        self.u = None if u is None else np.asarray(u, np.float16)
        self.mu = np.asarray(mu, np.float16)
        self.v = None if v is None else np.asarray(v, np.float16)
        self.report = report or FitReport(float("nan"))

    @classmethod
    def fit(cls, a: np.ndarray, b: np.ndarray, scaling: float, *, layout: str = "channel",
            sweeps: int = 3) -> Self:
        """Init from a trained LoRA pair by rank-1 SVID of each factor, then closed-form scale refits."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown LoRDBA layout '{layout}' (known: {', '.join(LAYOUTS)})")
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        target = scaling * b @ a
        fa, fb = svid(a), svid(b)
        details: dict[str, Any] = {
            "rho_A": fa.rho, "rho_B": fb.rho, "factor_rel_error_A": rel_error(a, fa.reconstruct()),
            "factor_rel_error_B": rel_error(b, fb.reconstruct()), "layout": layout}
        sa, sb = fa.signs.astype(np.float64), fb.signs.astype(np.float64)
        if layout == "channel":
            u, v = fb.left[:, 0], fa.right[:, 0]
            mu = scaling * fb.right[:, 0] * fa.left[:, 0]
            details["init_rel_error"] = rel_error(target, (u[:, None] * sb * mu) @ (sa * v))
            u, mu, v = refit_three(target, sb, sa, u, mu, v, sweeps)
        else:
            u = v = None
            mu = refit_middle(target, sb, sa)
        fitted = cls(signs(a), signs(b), u, mu, v)
        fitted.report = FitReport(rel_error(target, fitted.reconstruct()), details)  # as stored (fp16 scales)
        return fitted

    @property
    def shape(self) -> tuple[int, int]:
        return self.sb.shape[0], self.sa.shape[1]

    @property
    def rank(self) -> int:
        return self.sa.shape[0]

    def reconstruct(self) -> np.ndarray:
        u = 1.0 if self.u is None else self.u.astype(np.float32)[:, None]
        v = 1.0 if self.v is None else self.v.astype(np.float32)
        return (u * self.sb * self.mu.astype(np.float32)) @ (self.sa * v).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = x if self.v is None else x * self.v.astype(np.float32)
        h = (h @ self.sa.T.astype(np.float32)) * self.mu.astype(np.float32)  # S_A: adds/subtracts only
        y = h @ self.sb.T.astype(np.float32)  # S_B
        return y if self.u is None else y * self.u.astype(np.float32)

    def pack(self) -> Packed:
        packed = {"signs_A": pack_signs(self.sa), "signs_B": pack_signs(self.sb), "mu": self.mu}
        if self.u is not None and self.v is not None:
            packed |= {"u": self.u, "v": self.v}
        return packed

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        r = int(meta["rank"])
        sa = unpack_signs(packed["signs_A"], shape[1])
        sb = unpack_signs(packed["signs_B"], r)
        return cls(sa, sb, packed.get("u"), packed["mu"], packed.get("v"))

    def meta(self) -> dict[str, Any]:
        return {"rank": self.rank, "layout": self.layout}

    def formula_bits(self) -> int:
        """r(m+n) sign bits + fp16 scales: 16(n+m+r) for "channel", 16r for "rank" (one merged mu)."""
        n, m = self.shape
        r = self.rank
        pad = lambda k: -(-k // 8) * 8  # noqa: E731  (rows pad to whole bytes)
        sign_bits = r * pad(m) + n * pad(r)
        return sign_bits + 16 * ((n + m + r) if self.layout == "channel" else r)

    def to_lora(self) -> tuple[np.ndarray, np.ndarray, float]:
        """An equivalent plain LoRA pair: A = diag(mu) S_A diag(v), B = diag(u) S_B, scaling 1."""
        v = 1.0 if self.v is None else self.v.astype(np.float32)
        u = 1.0 if self.u is None else self.u.astype(np.float32)[:, None]
        a = self.mu.astype(np.float32)[:, None] * self.sa * v
        return a.astype(np.float32), (u * self.sb).astype(np.float32), 1.0
