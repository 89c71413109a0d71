"""Adapter formats: a LoRA pair (A [r, in], B [out, r], scaling) in fp16, LoRDBA, or with each factor
ternarised (BitNet absmean) or trit-planed (PTQTP). All expose the `WeightFormat` interface for dW."""

from typing import Any, Self

import numpy as np

from models.formats.base import FitReport, Packed, WeightFormat, rel_error
from models.formats.lora import LoraFp16, Lordba
from models.formats.ternary import Ternary, TritPlane

FACTOR_FORMATS: dict[str, type[Ternary] | type[TritPlane]] = {"ternary": Ternary, "tritplane": TritPlane}


class FactorAdapter(WeightFormat):
    """dW = scaling * B_hat @ A_hat with each factor stored in a base-weight format."""

    def __init__(self, name: str, fa: WeightFormat, fb: WeightFormat, scaling: float):
        self.name = name  # type: ignore[misc]  (per-instance: "ternary" or "tritplane")
        self.fa, self.fb, self.scaling = fa, fb, float(scaling)
        self.report = FitReport(float("nan"))

    @classmethod
    def fit(cls, name: str, a: np.ndarray, b: np.ndarray, scaling: float, **opts: Any) -> Self:
        fmt = FACTOR_FORMATS[name]
        out = cls(name, fmt.fit(a, **opts), fmt.fit(b, **opts), scaling)
        target = scaling * np.asarray(b, np.float64) @ np.asarray(a, np.float64)
        out.report = FitReport(rel_error(target, out.reconstruct()),
                               {"factor_rel_error_A": out.fa.report.rel_error,
                                "factor_rel_error_B": out.fb.report.rel_error})
        return out

    @property
    def shape(self) -> tuple[int, int]:
        return self.fb.shape[0], self.fa.shape[1]

    @property
    def rank(self) -> int:
        return self.fa.shape[0]

    def reconstruct(self) -> np.ndarray:
        return (self.scaling * (self.fb.reconstruct() @ self.fa.reconstruct())).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.scaling * self.fb.forward(self.fa.forward(x))

    def pack(self) -> Packed:
        return {f"A.{k}": v for k, v in self.fa.pack().items()} | {f"B.{k}": v for k, v in self.fb.pack().items()}

    @classmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self:
        fmt, r = FACTOR_FORMATS[meta["format"]], int(meta["rank"])
        part = lambda p: {k[2:]: v for k, v in packed.items() if k.startswith(p)}  # noqa: E731
        fa = fmt.unpack(part("A."), (r, shape[1]), meta["factor_meta"])
        fb = fmt.unpack(part("B."), (shape[0], r), meta["factor_meta"])
        return cls(meta["format"], fa, fb, meta["scaling"])

    def meta(self) -> dict[str, Any]:
        return {"format": self.name, "rank": self.rank, "scaling": self.scaling, "factor_meta": self.fa.meta()}

    def formula_bits(self) -> int:
        return self.fa.formula_bits() + self.fb.formula_bits()

    def to_lora(self) -> tuple[np.ndarray, np.ndarray, float]:
        return self.fa.reconstruct(), self.fb.reconstruct(), self.scaling


ADAPTER_FORMATS = ("lora-fp16", "lordba", "ternary", "tritplane")
TRAINABLE = ("lordba", "ternary", "tritplane")  # trained in sign form by models/sign_distill.py
DEFAULT_TRAIN_STEPS = 100


def fit_adapter(fmt: str, a: np.ndarray, b: np.ndarray, scaling: float, **opts: Any) -> WeightFormat:
    """Fit one adapted module's LoRA pair in `fmt` (see ADAPTER_FORMATS)."""
    if fmt == "lora-fp16":
        return LoraFp16.fit(a, b, scaling)
    if fmt == "lordba":
        return Lordba.fit(a, b, scaling, **opts)
    if fmt in FACTOR_FORMATS:
        return FactorAdapter.fit(fmt, a, b, scaling, **opts)
    raise ValueError(f"unknown adapter format '{fmt}' (known: {', '.join(ADAPTER_FORMATS)})")


def lora_equivalent(adapter: WeightFormat) -> tuple[np.ndarray, np.ndarray, float]:
    """A plain LoRA pair (A, B, scaling) computing exactly the adapter's dW: the correctness oracle."""
    if isinstance(adapter, LoraFp16):
        return adapter.a.astype(np.float32), adapter.b.astype(np.float32), adapter.scaling
    return adapter.to_lora()  # type: ignore[attr-defined]
