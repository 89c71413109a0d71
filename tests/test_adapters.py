"""PEFT adapters: reading, converting, bad input (one line, exit 2), file bytes, and the opt-in dense-LoRA twin."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from hwsim.cli import main
from hwsim.errors import HwsimError
from models.peft_io import read_adapter


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def one_line_error(code: int, stderr: str, needle: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr


def make_adapter(d: Path, r: int = 4, a_rows: int | None = None, target: str = "q_proj") -> Path:
    d.mkdir()
    rng = np.random.default_rng(0)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 8,
                                                       "target_modules": [target]}))
    key = f"base_model.model.model.layers.0.self_attn.{target}"
    save_file({f"{key}.lora_A.weight": rng.standard_normal((a_rows or r, 256)).astype(np.float32),
               f"{key}.lora_B.weight": rng.standard_normal((256, r)).astype(np.float32)},
              str(d / "adapter_model.safetensors"))
    return d


def test_read_adapter_scaling_and_rslora(tmp_path: Path) -> None:
    a = read_adapter(make_adapter(tmp_path / "a"))
    (name,) = a.modules
    assert a.rank(name) == 4 and a.scaling(name) == 2.0
    a.config["use_rslora"] = True
    assert a.scaling(name) == pytest.approx(8 / 2)


def recorded_files_match_disk(d: Path) -> dict:
    """hwsim_adapter.json's file bytes are every file in `d`, as on disk, its own size included."""
    report = json.loads((d / "hwsim_adapter.json").read_text())
    assert report["files"] == {p.name: os.path.getsize(p) for p in d.iterdir()}
    assert report["written_bytes"] == sum(report["files"].values())
    return report


def test_convert_writes_the_compact_form_only_by_default(tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "a", r=16)
    code, stdout, stderr = run("convert", str(src), "--format", "lordba", "--out", str(tmp_path / "o"))
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["hwsim_adapter.json", "hwsim_adapter.safetensors"]
    report = recorded_files_match_disk(tmp_path / "o")
    assert report["source_bytes"] == os.path.getsize(src / "adapter_model.safetensors")
    assert report["peft_config"] == json.loads((src / "adapter_config.json").read_text())
    assert not report["peft_twin"]
    code, _, stderr = run("convert", str(src), "--format", "lora-fp16", "--out", str(tmp_path / "fp16"))
    assert code == 0, stderr
    fp16 = recorded_files_match_disk(tmp_path / "fp16")
    assert report["written_bytes"] < fp16["written_bytes"] < report["source_bytes"]  # source is fp32
    assert report["written_bytes"] < report["lora_fp16_bytes"]
    assert f"{report['written_bytes']:,} bytes" in stdout and f"{report['source_bytes']:,} bytes" in stdout
    with pytest.raises(HwsimError, match="--peft-twin"):  # not a PEFT adapter, and the error says how to get one
        read_adapter(tmp_path / "o")


def test_convert_peft_twin_computes_what_the_format_computes(tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "a", r=16)
    code, _, stderr = run("convert", str(src), "--format", "lordba", "--out", str(tmp_path / "o"), "--peft-twin")
    assert code == 0, stderr
    report = recorded_files_match_disk(tmp_path / "o")
    assert set(report["files"]) == {"adapter_config.json", "adapter_model.safetensors", "hwsim_adapter.json",
                                    "hwsim_adapter.safetensors"} and report["peft_twin"]
    (row,) = report["modules"]
    assert row["bits"] == row["formula_bits"] == 16 * (256 + 256) + 16 * (256 + 256 + 16)
    packed = load_file(str(tmp_path / "o" / "hwsim_adapter.safetensors"))
    assert {k.rsplit(".", 1)[1] for k in packed} == {"signs_A", "signs_B", "mu", "u", "v"}
    assert sum(v.nbytes for v in packed.values()) * 8 == row["bits"]
    oracle = read_adapter(tmp_path / "o")  # still a valid PEFT adapter
    (name,) = oracle.modules
    a, b = oracle.modules[name]
    from models.formats import Lordba

    fitted = Lordba.unpack({k.rsplit(".", 1)[1]: v for k, v in packed.items()}, (256, 256), row["meta"])
    np.testing.assert_allclose(oracle.scaling(name) * b @ a, fitted.reconstruct(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setup, needle", [
    (lambda d: (d / "adapter_config.json").unlink(), "missing adapter_config.json"),
    (lambda d: (d / "adapter_model.safetensors").unlink(), "missing adapter_model.safetensors"),
    (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}'), "rank mismatch"),
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "invalid JSON"),
])
def test_bad_adapter_dirs(tmp_path: Path, setup, needle: str) -> None:
    src = make_adapter(tmp_path / "a")
    setup(src)
    code, _, stderr = run("convert", str(src), "--format", "lordba", "--out", str(tmp_path / "o"))
    one_line_error(code, stderr, needle)
    assert not (tmp_path / "o").exists()


def test_unknown_format_and_missing_dir(tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "a")
    code, _, stderr = run("convert", str(src), "--format", "int3", "--out", str(tmp_path / "o"))
    one_line_error(code, stderr, "unknown adapter format 'int3'")
    code, _, stderr = run("convert", str(tmp_path / "nope"), "--format", "lordba", "--out", str(tmp_path / "o"))
    one_line_error(code, stderr, "not an adapter directory")
    code, _, stderr = run("export", "tiny-llama", "--base-format", "int3", "--out", str(tmp_path / "m.onnx"))
    one_line_error(code, stderr, "unknown base format 'int3'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_model_without_the_target_modules(tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "a", target="c_attn")
    code, _, stderr = run("export", "tiny-llama", "--adapter", str(src), "--format", "lordba",
                          "--out", str(tmp_path / "m.onnx"))
    one_line_error(code, stderr, "the adapter targets module 'model.layers.0.self_attn.c_attn'")
    assert not (tmp_path / "m.onnx").exists()


def test_lordba_as_plain_peft_lora_reproduces_lordba_logits(tmp_path: Path) -> None:
    """The converted directory, loaded by PEFT as an ordinary LoRA, gives the LoRDBA model's logits."""
    from peft import PeftModel

    from models.variants import apply_formats, load_adapter_for, load_base

    code, _, stderr = run("convert", "tiny-llama", "--format", "lordba", "--out", str(tmp_path / "conv"),
                          "--peft-twin")
    assert code == 0, stderr
    lordba = load_base("tiny-llama")
    apply_formats(lordba, load_adapter_for(lordba, None), "lordba", "fp32")
    plain = load_base("tiny-llama")
    peft_model = PeftModel.from_pretrained(plain.model, str(tmp_path / "conv")).eval()
    ids = lordba.inputs(seed=3)[0]
    with torch.no_grad():
        want = lordba.wrapper()(ids)
        got = peft_model(input_ids=ids, use_cache=False).logits
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), float((got - want).abs().max())
