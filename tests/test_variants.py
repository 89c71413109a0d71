"""Every format applied to the zoo models, exported to compact ONNX that stock onnxruntime runs.

`export_variant` itself refuses to write a file whose onnxruntime output differs from the torch model of
that variant beyond the derived tolerance (hwsim/precision.py); these tests add what the file must look like
and that hwsim compiles it.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from codegen.kernels import LUT_MIN_DEPTH, LUT_MIN_ROWS, UNPACK_MIN_TOKENS
from hwsim.api import compile_model
from models.variants import apply_formats, evaluate_variants, export_variant, load_adapter_for, load_base

ADAPTER_VARIANTS = [(f, "fp32") for f in ("lora-fp16", "lordba", "ternary", "tritplane")]
BASE_VARIANTS = [("lora-fp16", b) for b in ("fp16", "dbf", "mdbf", "ternary", "tritplane")]
FAST = {"iters": 3}  # dbf/mdbf ADMM iterations: the export path, not the fit quality, is under test
EXPECTED_OPS = {"lordba": {"LoRDBA"}, "ternary": {"TernaryMatMul"}, "tritplane": {"TritPlane"}, "dbf": {"DBF"},
                "mdbf": {"MDBFPath"}}


def export(model: str, adapter_format: str, base_format: str, path: Path) -> dict:
    base = load_base(model)
    apply_formats(base, load_adapter_for(base, None), adapter_format, base_format, base_opts=FAST)
    return export_variant(base, path)


def pm1_float_matrices(path: Path) -> list[str]:
    """Initializers that are dense float matrices of only +-1 (what packing must avoid)."""
    out = []
    for t in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim == 2 and a.dtype.kind == "f" and a.size > 16 and np.isin(a, (-1.0, 1.0)).all():
            out.append(t.name)
    return out


def compiles_on_host_and_arm(path: Path, shapes: dict[str, tuple[int, ...]], out: Path) -> None:
    """The exported variant compiles for the host and for cortex-a76 (run under qemu); both match onnxruntime
    (compile_model raises on a mismatch), with every format layer lowered to accumulate ops."""
    for target in ("host", "cortex-a76"):
        m = compile_model(str(path), target=target, shapes=shapes, out=out / target, runs=3).manifest
        assert m["verification"]["passed"]
        lowered = [op for op in m["ir"]["ops"] if op.endswith("ACCUMULATE")]
        formats = {f for f in m["memory"]["weight_bytes_by_format"] if not f.startswith("dense")}
        assert bool(lowered) == bool(formats), (m["ir"]["ops"], formats)
        for name in m["kernels"]:  # prefill shapes: unpack, except deep sign layers wide enough for the LUT
            tokens, n, k = map(int, name.rsplit("_", 1)[1].split("x"))
            assert tokens >= UNPACK_MIN_TOKENS, name
            lut = n >= LUT_MIN_ROWS and n % 16 == 0 and k >= LUT_MIN_DEPTH and (
                name.startswith("sign_") or tokens < 4 * UNPACK_MIN_TOKENS)
            assert ("_lut_" if lut else "_unpack_") in name, name


@pytest.mark.parametrize("adapter_format, base_format", ADAPTER_VARIANTS + BASE_VARIANTS)
def test_tiny_llama_variant_exports_compact_and_compiles(adapter_format: str, base_format: str,
                                                        tmp_path: Path) -> None:
    info = export("tiny-llama", adapter_format, base_format, tmp_path / "m.onnx")
    assert info["onnxruntime_vs_torch_rel_err"] < 1e-3
    expected = EXPECTED_OPS.get(adapter_format, set()) | EXPECTED_OPS.get(base_format, set())
    assert set(info["hwsim_ops"]) == expected
    assert pm1_float_matrices(tmp_path / "m.onnx") == []
    if base_format in EXPECTED_OPS:  # only the embedding and the LM head stay dense, and they are fp16
        assert info["dense_fp32_matrices"] == 0
    compiles_on_host_and_arm(tmp_path / "m.onnx", {"input_ids": (1, 16)}, tmp_path)


def test_compile_verifies_a_format_variant(tmp_path: Path) -> None:
    """hwsim's own compiler takes the ai.hwsim ops (through their function bodies) to a verified build."""
    export("tiny-llama", "lordba", "ternary", tmp_path / "m.onnx")
    result = compile_model(str(tmp_path / "m.onnx"), shapes={"input_ids": (1, 16)}, out=tmp_path / "out", runs=3)
    assert result.manifest["verification"]["passed"]


def test_minilm_variant_exports_compiles_and_reports_cosine(tmp_path: Path) -> None:
    info = export("minilm", "lordba", "ternary", tmp_path / "m.onnx")
    assert set(info["hwsim_ops"]) == {"LoRDBA", "TernaryMatMul"}
    shapes = {"input_ids": (1, 16), "attention_mask": (1, 16)}
    result = compile_model(str(tmp_path / "m.onnx"), shapes=shapes, out=tmp_path / "out", runs=3)
    assert result.manifest["verification"]["passed"]
    assert set(result.manifest["memory"]["weight_bytes_by_format"]) >= {"LoRDBA", "TernaryMatMul"}
    rows = evaluate_variants("minilm", None, [("lora-fp16", "fp32"), ("lordba", "fp32")])
    assert rows[0]["cosine_similarity"] > 0.999  # fp16 LoRA: rounding only
    assert 0 < rows[1]["cosine_similarity"] <= 1
    assert rows[1]["adapter_ratio_vs_lora_fp16"] > 7


@pytest.mark.slow
@pytest.mark.parametrize("adapter_format, base_format", ADAPTER_VARIANTS + BASE_VARIANTS)
def test_minilm_every_variant(adapter_format: str, base_format: str, tmp_path: Path) -> None:
    info = export("minilm", adapter_format, base_format, tmp_path / "m.onnx")
    assert info["onnxruntime_vs_torch_rel_err"] < 1e-3
    assert pm1_float_matrices(tmp_path / "m.onnx") == []
    compiles_on_host_and_arm(tmp_path / "m.onnx", {"input_ids": (1, 16), "attention_mask": (1, 16)}, tmp_path)


def test_local_hugging_face_directory_with_adapter(tmp_path: Path) -> None:
    """MODEL may be a Hugging Face model directory, with --adapter a PEFT directory."""
    from click.testing import CliRunner

    from hwsim.cli import main
    from models.zoo import zoo_dir

    d = zoo_dir("tiny-llama")
    result = CliRunner().invoke(main, ["export", str(d / "base"), "--adapter", str(d / "adapter"), "--format",
                                       "tritplane", "--out", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["export"]["hwsim_ops"] == ["TritPlane"]
    assert report["variant"]["adapter_ratio_vs_lora_fp16"] > 3
