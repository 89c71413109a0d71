"""The matrix behind `hwsim compile`: a rerun of every target kind is all cache hits that write nothing, a
deterministic failure is cached until --force, a variant that fails its export check is a failed build in
the report, and Hugging Face directories with PEFT adapters (fp32 or fp16, ranks 4-32, attention and MLP
projections) compile to a report with every requested format."""

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.kernels import extras, unpack
from hwsim.cli import main
from models import variants

FORMATS = ("lora-fp16", "lordba", "ternary", "tritplane")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_rerun_of_every_target_kind_is_cached_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("compile", "--formats", "lordba", "--base-formats", "fp32", "--target",
            "host,cortex-a76,nvidia-h100,sacc-32x32", "--out", str(out), "--runs", "3")
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    assert "(0 cached, 0 failed)" in stdout
    before = snapshot(out)
    t0 = time.perf_counter()
    code, stdout, stderr = run(*args)
    elapsed = time.perf_counter() - t0
    assert code == 0, stderr
    assert "8 builds" in stdout and "(8 cached, 0 failed)" in stdout
    assert snapshot(out) == before  # not one file rewritten: builds, variants, matrix.json, the report
    assert elapsed < 15


def test_a_failed_build_is_cached_until_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that reads its weights in the wrong bit order fails the host prefill build (the unpack
    kernel); the failure is the cached answer for the same inputs until --force retries it."""
    def msb_first(packed, extra, bits):
        weight = extras.decoder(packed, extra, bits)
        return lambda o, kk: weight(o, (kk // 8) * 8 + (7 - kk % 8))

    out = tmp_path / "out"
    args = ("compile", "--formats", "lordba", "--base-formats", "fp32", "--target", "host", "--out", str(out),
            "--runs", "3", "--jobs", "1")  # one process: the patched kernel is this process's
    monkeypatch.setattr(unpack, "decoder", msb_first)
    code, stdout, stderr = run(*args)
    assert code == 0, stderr  # a failed build is reported, not fatal
    assert "(0 cached, 1 failed)" in stdout and "failed: lordba on host (prefill): VerificationError" in stdout
    record = json.loads((out / "lordba" / "host" / "prefill" / "failure.json").read_text())
    assert record["status"] == "failed" and "exceeds its tolerance" in record["error"]
    monkeypatch.undo()
    code, stdout, _ = run(*args)
    assert "(2 cached, 1 failed)" in stdout and "cached failure of this exact build; --force retries it" in stdout
    code, stdout, stderr = run(*args, "--force")
    assert code == 0 and "(1 cached, 0 failed)" in stdout, stderr
    assert not (out / "lordba" / "host" / "prefill" / "failure.json").exists()


def test_a_variant_failing_its_export_check_is_a_failed_build_in_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = variants.export_variant

    def failing(base, path, **kw):
        if Path(path).stem.startswith("lora-fp16"):
            raise variants.ExportCheckError(f"exported {Path(path).name}: torch differs from onnxruntime by 1.04e-03")
        return real(base, path, **kw)

    monkeypatch.setattr(variants, "export_variant", failing)
    out = tmp_path / "out"
    args = ("compile", "--formats", "lora-fp16,ternary", "--base-formats", "fp32", "--target", "sacc-32x32", "--out",
            str(out), "--jobs", "1")  # one process: the patched exporter is this process's
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    matrix = json.loads((out / "matrix.json").read_text())
    status = {(j["variant"], j["phase"]): j["status"] for j in matrix["jobs"]}
    assert status == {("lora-fp16", "prefill"): "failed", ("lora-fp16", "decode"): "failed",
                      ("ternary", "prefill"): "ok", ("ternary", "decode"): "ok"}
    failed = next(v for v in matrix["variants"] if v["id"] == "lora-fp16")
    assert failed["status"] == "failed" and "torch differs from onnxruntime" in failed["error"]
    report = (out / "report.md").read_text()
    assert "variant not exported: ExportCheckError: exported lora-fp16.onnx: torch differs" in report
    monkeypatch.undo()
    code, stdout, _ = run(*args)  # the failed export is the cached answer
    assert code == 0 and "(4 cached, 2 failed)" in stdout
    code, stdout, _ = run(*args, "--force")  # retried: now it exports and builds
    assert code == 0 and "(2 cached, 0 failed)" in stdout


def hf_model_with_adapter(root: Path, rank: int, dtype: str) -> tuple[Path, Path]:
    """A one-layer Llama-style model directory and a PEFT LoRA adapter on q/k/v/o and the MLP projections,
    saved as safetensors in `dtype`, both factors random (as after training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(rank)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    base = LlamaForCausalLM(config).eval()
    base.save_pretrained(root / "base")
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft = get_peft_model(base, lora)
    if dtype == "float16":
        peft = peft.half()
    peft.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


@pytest.mark.parametrize("rank, dtype, target", [(4, "float32", "host"), (32, "float16", "sacc-32x32")])
def test_hugging_face_directory_with_peft_adapter_compiles_every_format(rank: int, dtype: str, target: str,
                                                                        tmp_path: Path) -> None:
    from safetensors.torch import load_file

    base, adapter = hf_model_with_adapter(tmp_path, rank, dtype)
    assert {str(t.dtype) for t in load_file(adapter / "adapter_model.safetensors").values()} == {f"torch.{dtype}"}
    out = tmp_path / "out"
    code, _stdout, stderr = run("compile", str(base), "--adapter", str(adapter), "--formats", ",".join(FORMATS),
                               "--base-formats", "fp32", "--target", target, "--tokens", "8", "--runs", "3", "--out",
                               str(out))
    assert code == 0, stderr
    matrix = json.loads((out / "matrix.json").read_text())
    assert all(j["status"] == "ok" for j in matrix["jobs"]), [j for j in matrix["jobs"] if j["status"] != "ok"]
    assert {v["adapter_format"] for v in matrix["variants"]} == set(FORMATS)
    results = json.loads((out / "results.json").read_text())
    assert {c["variant"] for c in results["cells"]} == {v["id"] for v in matrix["variants"]}
    for v in matrix["variants"]:
        check = v["exports"]["prefill"]["check"]  # torch vs onnxruntime, under the tolerance derived for it
        assert check["tolerance"] == pytest.approx(1e-3 + 2 * check["fp16_rounding"], rel=1e-3)
        assert (check["fp16_ops_widened"] > 0) == (v["adapter_format"] == "lora-fp16")
        m = json.loads((out / v["id"] / target / "decode" / "manifest.json").read_text())
        assert m["verification"]["passed"]
        adapted = 7  # q/k/v/o and the three MLP projections
        if v["adapter_format"] == "lordba":
            assert m["ir"]["ops"]["SIGN_ACCUMULATE"] == 2 * adapted


def test_every_adapter_format_on_every_base_format(tmp_path: Path) -> None:
    """--formats x --base-formats, at matched rank and matched bytes: the ternary base runs through ternary
    accumulate ops and the sign adapter through sign accumulate ops in every build, prefill and KV-cache decode."""
    base, adapter = hf_model_with_adapter(tmp_path, 8, "float32")
    out = tmp_path / "out"
    code, stdout, stderr = run("compile", str(base), "--adapter", str(adapter), "--formats", "lora-fp16,lordba",
                               "--base-formats", "fp16,ternary", "--target", "sacc-32x32", "--tokens", "8",
                               "--context", "16", "--matched-bytes", "--steps", "5", "--out", str(out))
    assert code == 0, stderr
    matrix = json.loads((out / "matrix.json").read_text())
    ids = [v["id"] for v in matrix["variants"]]
    bytes_rank = next(v["rank"] for v in matrix["variants"] if v["matched"] == "bytes")
    assert ids == ["lora-fp16+fp16", "lordba+fp16", f"lora-fp16+fp16@r{bytes_rank}", "lora-fp16+ternary",
                   "lordba+ternary", f"lora-fp16+ternary@r{bytes_rank}"]
    assert matrix["context"] == 16 and matrix["phases"]["decode"]["past_keys"] == [1, 1, 4, 16, 16]
    assert all(j["status"] == "ok" for j in matrix["jobs"]) and len(matrix["jobs"]) == 12, stdout
    layers = 7  # q/k/v/o and the MLP projections, each with an adapter
    for v in matrix["variants"]:
        for phase in ("prefill", "decode"):
            ops = json.loads((out / v["id"] / "sacc-32x32" / phase / "manifest.json").read_text())["ir"]["ops"]
            assert ops.get("TERNARY_ACCUMULATE", 0) == (layers if v["base_format"] == "ternary" else 0)
            assert ops.get("SIGN_ACCUMULATE", 0) == (2 * layers if v["adapter_format"] == "lordba" else 0)
    trained = {v["id"]: v["training"]["steps"] for v in matrix["variants"] if v.get("training")}
    assert trained == {"lordba+fp16": 5, "lordba+ternary": 5}  # sign-form training, the fp LoRA untouched
    assert all("output_rel_error" in v["conversion"] for v in matrix["variants"] if v.get("training"))
    results = json.loads((out / "results.json").read_text())
    base_bytes = {a["variant"]: a["base_weight_bytes"]["value"] for a in results["adapters"]}
    assert base_bytes["lordba+ternary"] < base_bytes["lordba+fp16"] / 4
