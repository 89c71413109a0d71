"""CUDA targets: every tiny-llama format builds for sm_80, sm_87 and sm_90 with no GPU (TVM's CUDA pipeline,
then nvcc to PTX and cubin), with the packed kernels in the device code and a roofline latency marked
`estimated`. The `gpu` test runs, verifies and times the build on a GPU; it is skipped without one.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_variants import ADAPTER_VARIANTS, BASE_VARIANTS, export

from codegen import cuda
from hwsim import roofline
from hwsim.api import compile_model, resolve_model
from hwsim.cli import main
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
from targets import load_target

ARCHS = {"nvidia-a100": "sm_80", "jetson-orin": "sm_87", "nvidia-h100": "sm_90"}
SHAPES = {"input_ids": (1, 16)}
EM_CUDA = 190  # ELF e_machine of a cubin


def check_cuda_build(out: Path, m: dict, arch: str) -> None:
    assert m["target"]["arch"] == arch
    ptx = (out / m["artifacts"]["ptx"]["file"]).read_text()
    assert f".target {arch}" in ptx
    cubin = (out / m["artifacts"]["cubin"]["file"]).read_bytes()
    assert cubin[:4] == b"\x7fELF" and int.from_bytes(cubin[18:20], "little") == EM_CUDA
    for name in m["kernels"]:  # every packed kernel of the Relax module is a device kernel in PTX and cubin
        assert f"{name}_kernel" in m["device_kernels"] and f".entry {name}_kernel(" in ptx, name
        assert f"{name}_kernel".encode() in cubin, name
    assert "__global__" in (out / m["artifacts"]["cuda_source"]["file"]).read_text()
    est = m["latency"]["roofline"]
    assert est["provenance"] == "estimated" and est["median_ms"] > est["kernels_ms"] > 0 and est["launches"] > 0
    if not cuda.has_gpu():
        assert m["verification"]["passed"] is None and "no CUDA GPU" in m["verification"]["not_run"]
        assert "tvm" not in m["latency"]  # nothing measured is claimed


@pytest.mark.parametrize("adapter_format, base_format", ADAPTER_VARIANTS + BASE_VARIANTS)
def test_tiny_llama_variant_builds_for_every_cuda_arch(adapter_format: str, base_format: str,
                                                      tmp_path: Path) -> None:
    export("tiny-llama", adapter_format, base_format, tmp_path / "m.onnx")
    for target, arch in ARCHS.items():
        m = compile_model(str(tmp_path / "m.onnx"), target=target, shapes=SHAPES, out=tmp_path / target).manifest
        check_cuda_build(tmp_path / target, m, arch)
        formats = {f for f in m["memory"]["weight_bytes_by_format"] if not f.startswith("dense")}
        assert bool(m["kernels"]) == bool(formats), formats
        assert all("_decode_" in k for k in m["kernels"]), m["kernels"]


def test_batch_one_builds_with_warp_reductions(tmp_path: Path) -> None:
    """Decode (one token): the packed kernels take the warp-per-row word GEMV (uint32 weight words, float4
    activation loads, warp-shuffle reduction), not dlight's Matmul."""
    export("tiny-llama", "lordba", "ternary", tmp_path / "m.onnx")
    m = compile_model(str(tmp_path / "m.onnx"), target="nvidia-h100", shapes={"input_ids": (1, 1)},
                      out=tmp_path / "o").manifest
    check_cuda_build(tmp_path / "o", m, "sm_90")
    source = (tmp_path / "o" / "model.cu").read_text()
    assert m["kernels"]
    for name in m["kernels"]:  # the definition, not the forward declaration
        body = re.search(rf"{name}_kernel\(([^)]*)\) {{(.*?)\n}}\n", source, flags=re.S)
        assert body and "__shfl_down_sync" in body.group(2), name
        bits, k = (1 if name.startswith("sign") else 2), int(name.rsplit("x", 1)[1])
        words = k % (32 // bits) == 0  # else (LoRDBA's rank-16 sign up-projection) the byte-wise GEMV
        assert ("_words_" in name) == words, name
        assert not words or ("uint* __restrict__ words_ptr" in body.group(1)
                             and "*(float4*)(x_local_ptr" in body.group(2)), name


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("m, n, k, pre", [(1, 8, 64, False), (2, 12, 96, True), (1, 4, 2048, True)])
def test_word_gemv_computes_the_accumulation(bits: int, m: int, n: int, k: int, pre: bool) -> None:
    """The GEMV's computation over re-laid-out words, built unscheduled for the CPU, against numpy (the CUDA
    schedule itself only reorders it; running that needs a GPU)."""
    import tvm
    from tvm import te

    from codegen.kernels import Fused
    from codegen.kernels.gpu import gemv_te, word_layout
    from models.formats.packing import pack_i2, pack_signs

    rng = np.random.default_rng(k)
    w = rng.choice([-1, 1], (n, k)) if bits == 1 else rng.integers(-1, 2, (n, k))
    x, scale = rng.standard_normal((m, k)).astype(np.float32), rng.random(k).astype(np.float32)
    words = word_layout(pack_signs(w) if bits == 1 else pack_i2(w))
    assert words.dtype == np.uint32 and words.shape == (n, k * bits // 32)
    lib = tvm.tirx.build(te.create_prim_func(gemv_te(m, n, k, bits, Fused(pre=pre))), target="llvm")
    args = [tvm.runtime.tensor(a) for a in (x, words, *([scale] if pre else []), np.zeros((m, n), np.float32))]
    lib(*args)
    np.testing.assert_allclose(args[-1].numpy(), (x * scale if pre else x) @ w.T, rtol=1e-5, atol=1e-4)


def test_cli_compiles_for_a_gpu_without_one(tmp_path: Path) -> None:
    onnx = str(resolve_model(None).path)  # one .onnx file on one target: one build
    r = CliRunner().invoke(main, ["compile", onnx, "--target", "jetson-orin", "--shape", "input_ids=1x16", "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "estimated" in r.output and "sm_87" in r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    check_cuda_build(tmp_path / "o", m, "sm_87")
    r = CliRunner().invoke(main, ["compile", onnx, "--target", "nvidia-h100", "--rpc", "127.0.0.1:9", "--out",
                                  str(tmp_path / "r")])
    assert r.exit_code == 2 and "GPU" in r.output and not (tmp_path / "r").exists()


def test_roofline_bounds() -> None:
    """A GEMV is memory-bound at the target's bandwidth, a big GEMM compute-bound at its fp32 rate."""
    spec = load_target("nvidia-a100")

    def matmul(m: int, k: int, n: int) -> Graph:
        x, y = Value("x", TensorType((m, k), DType.FLOAT32)), Value("y", TensorType((m, n), DType.FLOAT32))
        w = Value.const("w", np.zeros((k, n), np.float32))
        return Graph("g", [x], [y], [Node(Op.MATMUL, [x, w], [y], name="mm")])

    gemv = roofline.estimate_gpu(matmul(1, 4096, 4096), spec, launches=1)
    moved = 4 * (4096 + 4096 * 4096 + 4096)
    assert gemv["top_nodes"][0]["bound"] == "memory" and gemv["bytes"] == moved
    assert gemv["kernels_ms"] == pytest.approx(moved / (spec.gpu.dram_bandwidth_gbs * 1e9) * 1e3, rel=1e-3)
    assert gemv["launch_ms"] == pytest.approx(spec.gpu.launch_overhead_us * 1e-3)
    gemm = roofline.estimate_gpu(matmul(512, 4096, 4096), spec, launches=1)
    assert gemm["top_nodes"][0]["bound"] == "compute"
    assert gemm["kernels_ms"] == pytest.approx(2 * 512 * 4096 * 4096 / (spec.gpu.fp32_tflops * 1e12) * 1e3, rel=1e-3)
    with pytest.raises(ValueError, match="not a GPU"):
        roofline.estimate_gpu(matmul(1, 8, 8), load_target("host"), launches=1)


def test_roofline_folds_constant_subgraphs_like_tvm() -> None:
    """An fp16 weight's cast and transpose run at build time (TVM's FoldConstant): the estimate charges only
    the matmul, reading the folded fp32 weight."""
    x, y = Value("x", TensorType((1, 64), DType.FLOAT32)), Value("y", TensorType((1, 32), DType.FLOAT32))
    w = Value.const("w", np.zeros((32, 64), np.float16))
    wide, wt = Value("wide", TensorType((32, 64), DType.FLOAT32)), Value("wt", TensorType((64, 32), DType.FLOAT32))
    g = Graph("g", [x], [y], [Node(Op.CAST, [w], [wide], {"to": DType.FLOAT32}, name="cast"),
                              Node(Op.TRANSPOSE, [wide], [wt], {"perm": (1, 0)}, name="t"),
                              Node(Op.MATMUL, [x, wt], [y], name="mm")])
    est = roofline.estimate(g, load_target("nvidia-a100"))
    assert [r["node"] for r in est["top_nodes"]] == ["mm"] and est["bytes"] == 4 * (64 + 64 * 32 + 32)


@pytest.mark.gpu
@pytest.mark.parametrize("adapter_format, base_format", [("lordba", "ternary"), ("lora-fp16", "fp16")])
def test_runs_verifies_and_times_on_the_gpu(adapter_format: str, base_format: str, tmp_path: Path) -> None:
    if not cuda.has_gpu():
        pytest.fail("marked gpu but no CUDA GPU is visible to TVM")
    export("tiny-llama", adapter_format, base_format, tmp_path / "m.onnx")
    m = compile_model(str(tmp_path / "m.onnx"), target="nvidia-h100", shapes=SHAPES, out=tmp_path / "o").manifest
    assert m["verification"]["passed"] is True and m["verification"]["executed_on"].startswith("GPU: ")
    lat = m["latency"]
    assert lat["tvm"]["provenance"] == "measured" and lat["tvm"]["median_ms"] > 0
    assert lat["measured_over_estimated"] > 0
