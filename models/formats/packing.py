"""Bit-exact packings of sign and trit matrices, so byte counts come from real bytes.

- signs: 1 bit per entry, bit=1 means +1, least-significant bit first along the row (in-features);
  rows padded to whole bytes. The layout the `ai.hwsim` ONNX ops and the kernels read.
- i2: 2 bits per trit, code = t + 1 (0: -1, 1: 0, 2: +1), 4 per byte, LSB first; bitnet.cpp's I2_S
  size (2.0 bpw plus a 32-byte per-tensor tail holding the fp32 scale).
- tq1_0: llama.cpp's TQ1_0 block (256 trits in 54 bytes: qs[48] base-3 5 trits/byte with the
  ceil(q*256/243) trick, qh[4] 4 trits/byte, fp16 block scale d), 1.6875 bpw.
"""

import numpy as np

I2_TAIL_BYTES = 32
TQ1_BLOCK = 256
TQ1_BLOCK_BYTES = 54


def pack_signs(s: np.ndarray) -> np.ndarray:
    """[rows, cols] in {-1,+1} (0 counts as +1) -> uint8 [rows, ceil(cols/8)]."""
    return np.packbits(np.asarray(s) >= 0, axis=-1, bitorder="little")


def unpack_signs(p: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [rows, ceil(cols/8)] -> int8 [rows, cols] in {-1,+1}."""
    bits = np.unpackbits(p, axis=-1, count=cols, bitorder="little").astype(np.int8)
    return bits * 2 - 1


def pack_i2(t: np.ndarray) -> np.ndarray:
    """[rows, cols] trits -> uint8 [rows, ceil(cols/4)], code t+1 at bits 2*(j%4)."""
    t = np.asarray(t, dtype=np.int8)
    rows, cols = t.shape
    codes = np.zeros((rows, -(-cols // 4) * 4), np.uint8)
    codes[:, :cols] = (t + 1).astype(np.uint8)
    codes[:, cols:] = 1  # padding trits are zeros
    c = codes.reshape(rows, -1, 4)
    return (c[..., 0] | c[..., 1] << 2 | c[..., 2] << 4 | c[..., 3] << 6).astype(np.uint8)


def unpack_i2(p: np.ndarray, cols: int) -> np.ndarray:
    shifts = np.array([0, 2, 4, 6], np.uint8)
    codes = (p[..., None] >> shifts) & 3
    return codes.reshape(p.shape[0], -1)[:, :cols].astype(np.int8) - 1


def _base3_bytes(trits: np.ndarray, extra_shift: bool = False) -> np.ndarray:
    """Trits (last axis = digits, most significant first) -> bytes q = ceil(v * 256 / 243)."""
    v = np.zeros(trits.shape[:-1], np.uint16)
    for d in range(trits.shape[-1]):
        v = v * 3 + (trits[..., d] + 1).astype(np.uint16)
    if extra_shift:  # qh: 4 trits, shifted so the first is the most significant of 5
        v = v * 3
    return ((v * 256 + 242) // 243).astype(np.uint8)


def _base3_digits(q: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `_base3_bytes`: digit k is ((q * 3^k mod 256) * 3) >> 8, as llama.cpp decodes."""
    out = []
    for k in range(n):
        qk = (q.astype(np.uint16) * (3**k)) & 0xFF
        out.append(((qk * 3) >> 8).astype(np.int8) - 1)
    return np.stack(out, axis=-1)


def pad_cols(x: np.ndarray, multiple: int) -> np.ndarray:
    cols = x.shape[1]
    padded = -(-cols // multiple) * multiple
    return x if padded == cols else np.pad(x, ((0, 0), (0, padded - cols)))


def pack_tq1_0(w: np.ndarray) -> np.ndarray:
    """Ternary-valued weights [rows, cols] -> uint8 [rows, blocks * 54] (rows padded to 256)."""
    w = pad_cols(np.asarray(w, np.float32), TQ1_BLOCK)
    rows, cols = w.shape
    blocks = w.reshape(rows * (cols // TQ1_BLOCK), TQ1_BLOCK)
    d = np.abs(blocks).max(axis=1)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    t = np.clip(np.rint(blocks * inv[:, None]), -1, 1).astype(np.int8)
    # qs[0:32]: elements m + 32n (n = 0..4) of the first 160; qs[32:48]: m + 16n of the next 80
    qs_a = _base3_bytes(t[:, :160].reshape(-1, 5, 32).transpose(0, 2, 1))
    qs_b = _base3_bytes(t[:, 160:240].reshape(-1, 5, 16).transpose(0, 2, 1))
    qh = _base3_bytes(t[:, 240:].reshape(-1, 4, 4).transpose(0, 2, 1), extra_shift=True)
    dh = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out = np.concatenate([qs_a, qs_b, qh, dh], axis=1)
    assert out.shape[1] == TQ1_BLOCK_BYTES
    return out.reshape(rows, -1)


def unpack_tq1_0(p: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [rows, blocks * 54] -> float32 [rows, cols] (trit * fp16 block scale)."""
    rows = p.shape[0]
    b = p.reshape(-1, TQ1_BLOCK_BYTES)
    t = np.concatenate([
        _base3_digits(b[:, :32], 5).transpose(0, 2, 1).reshape(-1, 160),
        _base3_digits(b[:, 32:48], 5).transpose(0, 2, 1).reshape(-1, 80),
        _base3_digits(b[:, 48:52], 4).transpose(0, 2, 1).reshape(-1, 16),
    ], axis=1)
    d = b[:, 52:54].copy().view(np.float16).astype(np.float32)
    return (t * d).reshape(rows, -1)[:, :cols]
