"""The `hwsim` command: the default compile, caching, determinism, and one-line errors (exit 2)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx_util import save, single_node_model

from hwsim.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x = np.zeros((2, 8), np.float32)
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    return save(single_node_model("MatMul", {"x": x}, {"w": w}), tmp_path_factory.mktemp("m") / "mm.onnx")


def test_compile_builds_a_matrix_verifies_reports_and_is_cached(tmp_path: Path) -> None:
    """A built-in model: format variants (and a matched-bytes one) x targets x prefill/decode, a report."""
    out = tmp_path / "out"
    args = ("compile", "--formats", "lora-fp16,lordba", "--base-formats", "fp32", "--matched-bytes", "--target",
            "host", "--out", str(out), "--runs", "3")
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    assert f"report: {out / 'report.html'}" in stdout.replace("\n", "")
    matrix = json.loads((out / "matrix.json").read_text())
    assert {v["id"] for v in matrix["variants"]} == {"lora-fp16", "lordba", "lora-fp16@r2"}  # r2: LoRDBA's bytes
    assert len(matrix["jobs"]) == 6 and all(j["status"] == "ok" for j in matrix["jobs"])
    m = json.loads((out / "lordba" / "host" / "prefill" / "manifest.json").read_text())
    assert m["model"]["name"] == "lordba" and m["verification"]["passed"]
    assert m["inputs"] == [{"name": "input_ids", "shape": [1, 16], "dtype": "int64"}]
    assert m["ir"]["ops"]["SIGN_ACCUMULATE"] == 8  # two per adapted projection: q and v of both layers
    assert {"tvm", "onnxruntime", "roofline"} <= m["latency"].keys()
    assert m["latency"]["tvm"]["provenance"] == "measured" and m["latency"]["roofline"]["provenance"] == "estimated"
    assert "HWSIM_CALIBRATE=0" in m["latency"]["calibrated"]["skipped"]  # the suite skips the calibration
    assert {k["class"] for k in m["census"]["kernels"]} >= {"dense", "accumulate"}  # what the host model prices
    decode = json.loads((out / "lordba" / "host" / "decode" / "manifest.json").read_text())
    assert [i["shape"] for i in decode["inputs"]] == [[1, 1], [2, 1, 4, 128, 64], [2, 1, 4, 128, 64]]  # KV cache
    # unchanged inputs: every build a cache hit that rewrites nothing
    before = (out / "lordba" / "host" / "prefill" / "model.so").stat().st_mtime_ns
    code, stdout, _ = run(*args)
    assert code == 0 and "(6 cached, 0 failed)" in stdout
    assert (out / "lordba" / "host" / "prefill" / "model.so").stat().st_mtime_ns == before


def test_same_model_and_seed_give_identical_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cold builds from independent zoo caches: same ONNX bytes, IR dump, library and cache key."""
    from hwsim.api import compile_model

    manifests = []
    for i in range(2):
        monkeypatch.setenv("HWSIM_CACHE_DIR", str(tmp_path / f"cache{i}"))
        manifests.append(compile_model(None, out=tmp_path / f"out{i}", runs=3).manifest)
    a, b = manifests
    assert a["model"]["files"] == b["model"]["files"]
    assert a["artifacts"] == b["artifacts"]
    assert a["cache_key"] == b["cache_key"]
    assert (tmp_path / "out0" / "ir.txt").read_text() == (tmp_path / "out1" / "ir.txt").read_text()


def test_json_prints_only_the_manifest(mlp_onnx: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run("compile", str(mlp_onnx), "--out", str(tmp_path / "o"), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["schema"] == "hwsim.manifest/1"


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a protobuf\n" * 20)
    code, _, stderr = run("compile", str(bad), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, stderr, str(bad), "ONNX")
    assert leftovers(tmp_path) == ["notes.onnx"]


def test_truncated_onnx(mlp_onnx: Path, tmp_path: Path) -> None:
    data = mlp_onnx.read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    code, _, stderr = run("compile", str(bad), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, stderr, str(bad))
    assert leftovers(tmp_path) == ["cut.onnx"]


def test_unsupported_op(tmp_path: Path) -> None:
    x = np.zeros((1, 1, 4, 4), np.float32)
    path = save(single_node_model("MaxPool", {"x": x}, kernel_shape=[2, 2]), tmp_path / "pool.onnx")
    code, _, stderr = run("compile", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, stderr, "unsupported op MaxPool", "node 'the_maxpool'", "opset 18")
    assert leftovers(tmp_path) == ["pool.onnx"]


@pytest.mark.parametrize("spec, needle", [
    ("x=abc", "expected NAME=DIMS"),
    ("x=0x8", "expected NAME=DIMS"),
    ("nosuch=1x8", "the model has no input 'nosuch' (inputs: x)"),
    ("x=2x8x1", "does not fit the input's dims [2, 8]"),
    ("x=3x8", "does not fit the input's dims [2, 8]"),
])
def test_wrong_shape(mlp_onnx: Path, tmp_path: Path, spec: str, needle: str) -> None:
    code, _, stderr = run("compile", str(mlp_onnx), "--shape", spec, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, stderr, needle)
    assert leftovers(tmp_path) == []


def test_existing_output_needs_force(mlp_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, stderr = run("compile", str(mlp_onnx), "--out", str(out))
    assert_one_line_error(code, stderr, str(out), "--force")
    assert leftovers(out) == ["keep.txt"] and leftovers(tmp_path) == ["mine"]
    code, _, stderr = run("compile", str(mlp_onnx), "--out", str(out), "--force")
    assert code == 0, stderr
    assert "keep.txt" not in leftovers(out) and "manifest.json" in leftovers(out)
    assert leftovers(tmp_path) == ["mine"]


def test_failed_build_leaves_no_partial_output(mlp_onnx: Path, tmp_path: Path) -> None:
    """A verification failure (here: an impossible tolerance) exits 1 and writes nothing."""
    out = tmp_path / "deep" / "out"
    code, _, stderr = run("compile", str(mlp_onnx), "--out", str(out), "--rtol", "-1")
    assert code == 1, stderr
    assert "output 'y0'" in stderr and "exceeds its tolerance -1 (rtol -1 + 2 x fp16 rounding 0)" in stderr
    assert leftovers(tmp_path) == []


def test_unknown_model_and_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default output directory is build/MODEL: nothing may be left there
    code, _, stderr = run("compile", "no-such-model")
    assert_one_line_error(code, stderr, "no-such-model: not an .onnx file, a built-in model", "tiny-llama")
    code, _, stderr = run("compile", "--target", "no-such-target")
    assert_one_line_error(code, stderr, "unknown target 'no-such-target'", "host")
    code, _, stderr = run("compile", str(tmp_path / "missing.onnx"))
    assert_one_line_error(code, stderr, "no such file")
    code, _, stderr = run("compile", str(tmp_path / "missing.onnx"), "--target", "host,sacc-32x32")
    assert_one_line_error(code, stderr, "no such file")
    assert leftovers(tmp_path) == []  # no build/ directory left behind


def test_inspect_summarises_the_default_model() -> None:
    code, stdout, stderr = run("inspect", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["name"] == "tiny-llama"
    assert report["ops"]["MATMUL"] >= 22
    assert set(report["param_bytes_by_dtype"]) == {"float32", "float16"}  # base fp32, LoRA fp16
    assert report["largest"][0]["bytes"] >= report["largest"][-1]["bytes"]


def test_help_explains_commands() -> None:
    code, stdout, _ = run("compile", "--help")
    assert code == 0 and "--shape" in stdout and "onnxruntime" in stdout
