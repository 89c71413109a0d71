"""Q8_0 (llama.cpp's 8-bit block format) for the LM head and the input embedding it is tied to: int8 codes
with one fp16 scale per 32 consecutive weights of a row, 8.5 bits a weight. Its matmul quantizes the
activations per 32 values too (hwsim.interp.quantize_blocks), so the head runs as int8 dot products, as
llama.cpp's TQ2_0 and Q4_0 files of SmolLM2 run it."""

from dataclasses import dataclass

import numpy as np

BLOCK = 32


@dataclass(frozen=True)
class Q80:
    q: np.ndarray  # int8 [N, K]
    d: np.ndarray  # float16 [N, K / BLOCK]

    @classmethod
    def fit(cls, w: np.ndarray) -> "Q80":
        """d = max|w| / 127 per block (stored fp16), q = round(w / d), ties to even."""
        n, k = w.shape
        if k % BLOCK:
            raise ValueError(f"Q8_0 needs rows in whole blocks of {BLOCK}, got {k} columns")
        wb = w.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
        d = (np.abs(wb).max(-1) / 127).astype(np.float16)
        safe = np.where(d > 0, d.astype(np.float32), 1)
        q = np.clip(np.round(wb / safe[..., None]), -127, 127).astype(np.int8)
        return cls(q.reshape(n, k), d)

    def reconstruct(self) -> np.ndarray:
        n, k = self.q.shape
        return (self.q.reshape(n, k // BLOCK, BLOCK) * self.d.astype(np.float32)[..., None]).reshape(n, k)

    def bits(self) -> int:
        return 8 * self.q.size + 16 * self.d.size
