"""Verification: the reference is the IR's semantics on any machine, the tolerance is derived, and a real
mismatch (a kernel reading its packed weights in the wrong bit order) fails on every target kind."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_util import single_node_model
from test_variants import export

from codegen import cuda
from codegen.kernels import extras, gpu, unpack
from hwsim.accel import functional
from hwsim.api import compile_model
from hwsim.errors import VerificationError
from hwsim.interp import unpack_weights
from hwsim.precision import exact_twin, reference, verify_outputs

SHAPES = {"input_ids": (1, 16)}  # prefill: the CPU and GPU builds take the unpack/decode kernels


def fp16_matmul_model(k: int, n: int, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """y = float(half(x) @ W16): an fp16 MatMul whose accumulation order and width decide its result."""
    w = np.abs(np.random.default_rng(seed).standard_normal((k, n))).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
         helper.make_node("MatMul", ["xh", "w"], ["yh"]),
         helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)],
        "fp16mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_reference_is_fp32_accumulation_rounded_once() -> None:
    model, w = fp16_matmul_model(4096, 8)
    x = np.abs(np.random.default_rng(1).standard_normal((4, 4096))).astype(np.float32)
    ref = reference(model, {"x": x}, rtol=1e-3)
    ir = (x.astype(np.float16).astype(np.float32) @ w.astype(np.float32)).astype(np.float16).astype(np.float32)
    # the same value, up to one fp16 step where fp32 summation order moves a value across a rounding boundary
    assert np.all(np.abs(ref.outputs[0] - ir) <= np.spacing(np.abs(ir).astype(np.float16)).astype(np.float32))
    assert ref.fp16_ops == 1
    # the unrounded twin: the inputs and the output are not rounded to fp16
    assert 1e-5 < ref.fp16_rounding[0] < 2e-3
    assert ref.tolerance(0) == pytest.approx(1e-3 + 2 * ref.fp16_rounding[0])
    # fp16 accumulation (what some CPUs' onnxruntime kernels do) is not the IR's semantics and is caught
    acc = np.zeros((4, 8), np.float16)
    for i in range(4096):
        acc += x[:, i:i + 1].astype(np.float16) * w[i]
    assert not ref.check(0, acc.astype(np.float32)).ok


def test_fp32_paths_keep_rtol_and_the_twin_is_the_model() -> None:
    w = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    model = single_node_model("MatMul", {"x": np.ones((4, 64), np.float32)}, {"w": w})
    twin, count = exact_twin(model)
    assert count == 0 and twin == model
    ref = reference(model, {"x": np.ones((4, 64), np.float32)}, rtol=1e-3)
    assert ref.fp16_rounding == [0.0] and ref.tolerance(0) == 1e-3
    assert ref.record()["reference"] == "onnxruntime"


def test_fp16_inputs_and_outputs_keep_their_interface() -> None:
    """A model that takes and returns fp16: the twins widen inside, the interface stays fp16."""
    w = np.random.default_rng(0).standard_normal((512, 8)).astype(np.float16)
    x = np.random.default_rng(1).standard_normal((4, 512)).astype(np.float16)
    model = single_node_model("MatMul", {"x": x}, {"w": w})
    ref = reference(model, {"x": x}, rtol=1e-3)
    assert ref.outputs[0].dtype == np.float16 and ref.fp16_ops == 1
    ir = (x.astype(np.float32) @ w.astype(np.float32)).astype(np.float16)
    assert np.abs(ref.outputs[0].astype(np.float32) - ir.astype(np.float32)).max() <= np.spacing(np.abs(ir)).max()
    assert 0 < ref.fp16_rounding[0] < 1e-3  # only the output's own rounding differs between the twins


def test_a_wrong_layout_fails_verification() -> None:
    model, w = fp16_matmul_model(256, 8)
    x = np.random.default_rng(2).standard_normal((4, 256)).astype(np.float32)
    ref = reference(model, {"x": x}, rtol=1e-3)
    good = (x @ w.astype(np.float32)).astype(np.float16).astype(np.float32)
    assert verify_outputs(ref, [good], None, "numpy")[0]["ok"]
    transposed = (x @ w.reshape(8, 256).T.astype(np.float32)).astype(np.float32)  # the same bytes, wrong layout
    with pytest.raises(VerificationError, match=r"output 'y'.*exceeds its tolerance"):
        verify_outputs(ref, [transposed], None, "numpy")


# --- a broken kernel on every target kind ------------------------------------------------------------

def msb_first(decoder):
    """The TE kernels' decoding rule with the bits of each byte read in the wrong order."""
    def broken(packed, extra, bits):
        weight, per = decoder(packed, extra, bits), 8 // bits
        return lambda o, kk: weight(o, (kk // per) * per + (per - 1 - kk % per))
    return broken


REVERSED = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], np.uint8)


def reversed_bits(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """The accelerator's weight decode with each byte's bit order reversed."""
    return unpack_weights(REVERSED[packed], k, bits)


@pytest.fixture(scope="module")
def lordba_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lordba") / "m.onnx"
    export("tiny-llama", "lordba", "fp32", path)
    return path


@pytest.mark.parametrize("target", ["host", "cortex-a76"])
def test_a_broken_cpu_kernel_is_caught(target: str, lordba_onnx: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "decoder", msb_first(extras.decoder))
    with pytest.raises(VerificationError, match="exceeds its tolerance"):
        compile_model(str(lordba_onnx), target=target, shapes=SHAPES, out=tmp_path / "o", runs=3)
    assert not (tmp_path / "o").exists()
    monkeypatch.undo()  # the same build with the right kernel passes
    assert compile_model(str(lordba_onnx), target=target, shapes=SHAPES, out=tmp_path / "o",
                         runs=3).manifest["verification"]["passed"]


def test_a_broken_accelerator_decode_is_caught(lordba_onnx: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert reversed_bits(np.array([[1]], np.uint8), 8, 1)[0].tolist() == [-1] * 7 + [1]
    monkeypatch.setattr(functional, "unpack_weights", reversed_bits)
    with pytest.raises(VerificationError, match="functional simulation of sacc-32x32"):
        compile_model(str(lordba_onnx), target="sacc-32x32", shapes=SHAPES, out=tmp_path / "o")


@pytest.mark.gpu
def test_a_broken_gpu_kernel_is_caught(lordba_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not cuda.has_gpu():
        pytest.fail("marked gpu but no CUDA GPU is visible to TVM")
    monkeypatch.setattr(gpu, "decoder", msb_first(extras.decoder))
    with pytest.raises(VerificationError, match="exceeds its tolerance"):
        compile_model(str(lordba_onnx), target="nvidia-h100", shapes=SHAPES, out=tmp_path / "o")
