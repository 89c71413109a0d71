"""ONNX files hwsim did not produce: torch and transformers models, both torch exporters.

Each is exported with dynamic batch/sequence dims, compiled with `--shape`, built by TVM and verified
against onnxruntime by `compile_model` itself (which raises on a mismatch).
"""

from pathlib import Path

import pytest
import torch
from torch_models import build

from hwsim.api import compile_model
from models.export import quiet

KINDS = ["mlp", "bert", "llama", "gpt2", "qwen2"]


def export(kind: str, dynamo: bool, path: Path) -> list[str]:
    module, args, names = build(kind)
    with quiet(), torch.no_grad():
        if dynamo:
            dims = {0: torch.export.Dim("batch", min=1, max=8)}
            if kind != "mlp":
                dims[1] = torch.export.Dim("seq", min=2, max=60)
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, input_names=names,
                              output_names=["y"], dynamic_shapes={n: dims for n in names})
        else:
            axes = {0: "batch"} if kind == "mlp" else {0: "batch", 1: "seq"}
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=["y"],
                              dynamic_axes={n: axes for n in names})
    return names


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("kind", KINDS)
def test_compile_verifies_exported_model(kind: str, dynamo: bool, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.onnx"
    names = export(kind, dynamo, path)
    shapes = {n: (3, 32) if kind == "mlp" else (2, 20) for n in names}
    result = compile_model(str(path), shapes=shapes, out=tmp_path / "out", runs=3)
    m = result.manifest
    assert m["verification"]["passed"]
    assert [i["shape"] for i in m["inputs"]] == [list(s) for s in shapes.values()]
    for row in m["verification"]["outputs"]:
        assert row["max_rel_err"] < 1e-4, row
        assert row["interpreter_max_rel_err"] < 1e-4, row
    assert (tmp_path / "out" / "model.so").stat().st_size > 0
    assert m["latency"]["tvm"]["provenance"] == "measured"


def test_dynamic_dims_without_shape_are_rejected(tmp_path: Path) -> None:
    from hwsim.errors import HwsimError

    path = tmp_path / "mlp.onnx"
    export("mlp", False, path)
    with pytest.raises(HwsimError, match=r"input 'x' has dynamic dims \[batch, 32\]: fix them with --shape x=Nx32"):
        compile_model(str(path), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
