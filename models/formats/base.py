"""The interface every format implements, and exact byte accounting from packed arrays.

A format instance is a fitted representation of one weight matrix W [out, in] (or of one LoRA pair).
- `reconstruct()` is the dense oracle; `forward(x)` is the structured computation (sign/trit
  accumulations and channel scalings) that kernels implement, and must equal x @ reconstruct().T.
- `pack()` gives the arrays that are actually stored (signs/trits packed, scales in their dtype);
  `bits()` counts them, and `formula_bits()` is the paper's storage formula, which tests compare.
- `unpack(packed, shape)` rebuilds an equivalent instance from the stored arrays alone.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

Packed = dict[str, np.ndarray]


def rel_error(target: np.ndarray, approx: np.ndarray) -> float:
    """||target - approx||_F / ||target||_F."""
    norm = float(np.linalg.norm(target))
    return float(np.linalg.norm(target - approx)) / norm if norm else 0.0


def packed_bits(packed: Packed) -> int:
    return 8 * sum(int(a.nbytes) for a in packed.values())


@dataclass
class FitReport:
    """What a fit measured: relative reconstruction error and format-specific figures (rho, ...)."""

    rel_error: float
    details: dict[str, Any] = field(default_factory=dict)


class WeightFormat(ABC):
    """A fitted low-bit representation of a dense matrix [out_features, in_features]."""

    name: ClassVar[str]
    report: FitReport

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]: ...

    @abstractmethod
    def reconstruct(self) -> np.ndarray: ...

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def pack(self) -> Packed: ...

    @classmethod
    @abstractmethod
    def unpack(cls, packed: Packed, shape: tuple[int, int], meta: dict[str, Any]) -> Self: ...

    @abstractmethod
    def formula_bits(self) -> int: ...

    def meta(self) -> dict[str, Any]:
        """Small static parameters needed next to the packed arrays (scaling, rank, ...)."""
        return {}

    def bits(self) -> int:
        return packed_bits(self.pack())

    def bits_per_weight(self) -> float:
        n, m = self.shape
        return self.bits() / (n * m)
