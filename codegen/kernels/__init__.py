"""TIR kernels for the low-bit accumulate ops, and the choice between them by shape and target.

- `lut` (codegen/kernels/lut.py): T-MAC lookup tables over groups of 4 activations with byte shuffles;
  needs AVX2 or SSSE3 (x86) or NEON (aarch64), constant weights (re-laid out at build time), N a multiple of the
  shuffle width and at least LUT_MIN_ROWS, K a multiple of 8. Signs, and trits as two sign planes. On x86 CPUs
  with AVX-512 VBMI and VNNI (Ice Lake, Zen 4 and later) the same tables run four groups to a 64-entry
  `vpermb` and sum by `vpdpbusd` (codegen/kernels/lut_vnni.py: N % 16, K % 32): 1.7x the AVX2 kernel's
  speed on a 1x4096x4096 sign GEMV (62 vs 107 us, znver4, 2 threads), 2x on SmolLM2's 576x576 ternary, both
  measured before the AVX2 kernel widened its lookups by multiply-add (lut.py), which halved its time on znver3.
- `unpack` (codegen/kernels/unpack.py): a blocked fp32 GEMM decoding +-1/0 weight panels on the fly, for
  prefill (many rows), where the decode amortises over the rows and the FMA units run at full rate.
- `words` / `decode` (codegen/kernels/gpu.py): on CUDA targets, a warp-per-row GEMV over 32-bit words of
  packed weights (decode, constant weights), else decode + matmul (prefill: scheduled by TVM's dlight rules).
- `select` (codegen/kernels/accumulate.py): per-weight add/subtract/skip, any CPU, any N; K must fill
  whole bytes.

Every kernel is PrimFunc(x [m, k] f32, w, [pre [k] f32], [post [n] f32], [add [m, n] f32], y [m, n] f32) with
the accumulate op's scales and addend fused (`Fused` says which are present): y = post * (W (pre * x)) + add.

Measured on znver3, 2 threads (ms): 1x4096x4096 sign LUT 0.23 (warm; on a VM whose two threads share one
core's vector units, 0.47-0.51 before the multiply-add widening and 0.24-0.26 after), select 1.1, unpack
3.2; 16x4096x4096 sign LUT 3.1, unpack 7.1; 128x4096x4096 sign LUT 25.5, unpack 35.4; ternary LUT 48.1, unpack
36.7; 128x16x4096 (LoRDBA's down-projection) unpack 0.37, select 1.1; 128x4096x16 unpack 0.25, LUT 0.31.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import tirx

# Tables cost m*k*16 entries per call whatever N is: below this many weight rows, select is faster
# (measured on znver3: 128x16x4096 LUT 1.36 ms vs select 1.05 ms; 1x4096x4096 LUT 0.37 ms vs 2.0 ms).
LUT_MIN_ROWS = 32
UNPACK_MIN_TOKENS = 8  # activation rows from which unpack beats select (the decode amortises over them)
LUT_MIN_DEPTH = 256  # below this K, decoding a panel beats building tables even for sign weights


@dataclass(frozen=True)
class Fused:
    """Which of the accumulate op's extras a kernel applies itself, so that none costs another pass over the
    activations: a pre-scale on x, a post-scale on y, an addend (a residual, or the other term of a sum)."""

    pre: bool = False
    post: bool = False
    add: bool = False

    @property
    def suffix(self) -> str:
        return "".join(f"_{k}" for k in ("pre", "post", "add") if getattr(self, k))


UNFUSED = Fused()


@dataclass(frozen=True)
class Kernel:
    name: str
    algorithm: str
    func: tirx.PrimFunc
    relayout: Callable[[np.ndarray], np.ndarray] | None  # packed weights -> the kernel's layout
    fused: Fused = UNFUSED  # the extras the kernel applies (the caller applies the rest)


def shuffle_isas(target: tvm.target.Target | None) -> list[str]:
    """The byte-shuffle instruction sets the LUT kernels can use on `target`, fastest first."""
    if target is None or target.kind.name != "llvm":
        return []
    if "arm_cpu" in target.keys and "aarch64" in str(target.attrs.get("mtriple", "")):
        return ["neon"]
    with target:
        has = tvm.target.codegen.target_has_features
        vnni = ["avx512vnni"] if has("avx512vbmi") and has("avx512vnni") else []
        return vnni + [isa for isa in ("avx2", "ssse3") if has(isa)]


def lut_fits(isa: str, n: int, k: int) -> bool:
    from codegen.kernels import lut, lut_vnni

    return lut_vnni.vnni_fits(n, k) if isa == lut_vnni.ISA else lut.lut_fits(n, k, isa)


def choose_accumulate(bits: int, m: int, n: int, k: int, target: tvm.target.Target | None,
                      weights: np.ndarray | None, fused: Fused = UNFUSED) -> Kernel:
    from codegen.kernels.accumulate import accumulate_kernel
    from codegen.kernels.lut import lut_kernel, lut_layout
    from codegen.kernels.lut_vnni import ISA as VNNI
    from codegen.kernels.lut_vnni import vnni_kernel, vnni_layout
    from codegen.kernels.unpack import unpack_kernel
    from hwsim.interp import unpack_weights

    kind = "sign" if bits == 1 else "ternary"

    def named(algorithm: str) -> str:
        return f"{kind}_accumulate_{algorithm}{fused.suffix}_{m}x{n}x{k}"

    if target is not None and target.kind.name == "cuda":
        from codegen.kernels.gpu import GEMV_MAX_ROWS, decode_gemv, decode_matmul, gpu_fusable, word_layout

        fused = gpu_fusable(m, fused)
        if m < GEMV_MAX_ROWS and weights is not None and k % (32 // bits) == 0:
            name = named("words")
            return Kernel(name, "words", decode_gemv(m, n, k, name, bits, fused), word_layout, fused)
        return Kernel(named("decode"), "decode", decode_matmul(m, n, k, named("decode"), bits, fused), None, fused)
    isa = next((i for i in shuffle_isas(target) if lut_fits(i, n, k)), None)
    lut = isa is not None and weights is not None and n >= LUT_MIN_ROWS
    prefill = m >= UNPACK_MIN_TOKENS and target is not None and target.kind.name == "llvm"
    # Trits take twice the lookups of signs (two planes), so unpack overtakes the LUT at fewer rows.
    if lut and (not prefill or (k >= LUT_MIN_DEPTH and (bits == 1 or m < 4 * UNPACK_MIN_TOKENS))):
        name = named(f"lut_{isa}")
        if isa == VNNI:
            threads = int(target.attrs.get("num-cores", 1))  # the decode kernel's parallel region, one per thread
            return Kernel(name, "lut", vnni_kernel(m, n, k, name, planes=bits, fused=fused, threads=threads),
                          lambda p: vnni_layout(unpack_weights(p, k, bits), planes=bits, threads=threads), fused)
        return Kernel(name, "lut", lut_kernel(m, n, k, name, isa, planes=bits, fused=fused),
                      lambda p: lut_layout(unpack_weights(p, k, bits), isa, planes=bits), fused)
    if prefill:
        return Kernel(named("unpack"), "unpack", unpack_kernel(m, n, k, named("unpack"), bits, target, fused), None,
                      fused)
    return Kernel(named("select"), "select", accumulate_kernel(m, n, k, named("select"), bits, fused), None, fused)
