"""The comparison report: results.json follows its schema with a provenance on every figure; report.html
renders in headless Chromium with every section and plot and no console errors; a failed target is
reported, not fatal; `hwsim report` regenerates the same results without rebuilding."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwsim.matrix import compile_matrix
from hwsim.report import validate, write_report

SACC = Path(__file__).parents[1] / "targets" / "sacc-32x32.toml"
SECTIONS = ("summary", "latency", "memory", "energy", "accuracy", "hotswap", "overhead", "layers", "failures")
PLOTS = ("latency", "pareto", "footprint", "energy", "layers")


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama, two formats on its own fp32 base (and LoRDBA-sized fp16 LoRA), on the host, the accelerator
    and a copy of the accelerator with 128x128 arrays and a 1 KiB weight buffer, which no tile fits (it must fail, and
    be reported)."""
    root = tmp_path_factory.mktemp("report")
    broken = root / "tiny-sacc.toml"
    broken.write_text(SACC.read_text().replace('name = "sacc-32x32"', 'name = "tiny-sacc"').replace(
        "rows = 32\ncols = 32", "rows = 128\ncols = 128").replace("rows = 8\ncols = 8", "rows = 128\ncols = 128")
        .replace("[buffers.weight]\nkib = 128", "[buffers.weight]\nkib = 1"))
    compile_matrix(None, formats=["lora-fp16", "lordba"], base_formats=["fp32"], matched_bytes=True,
                   targets=["host", "sacc-32x32", str(broken)], out=root / "out", runs=3, workers=2)
    return root / "out"


def figures(obj: object) -> list[dict]:
    """Every dict that carries a number under "value"."""
    if isinstance(obj, dict):
        found = [obj] if "value" in obj and isinstance(obj["value"], int | float) else []
        return found + [f for v in obj.values() for f in figures(v)]
    if isinstance(obj, list):
        return [f for v in obj for f in figures(v)]
    return []


def test_results_follow_the_schema_with_provenance_everywhere(matrix_dir: Path) -> None:
    results = json.loads((matrix_dir / "results.json").read_text())
    validate(results)
    found = figures(results["cells"]) + figures(results["adapters"]) + figures(results["branch_overhead"])
    assert len(found) > 50
    assert all(f["provenance"] in ("measured", "simulated", "estimated", "counted") and f["source"] for f in found)
    cells = {(c["variant"], c["target"]): c for c in results["cells"]}
    host = cells[("lordba", "host")]
    assert [f["provenance"] for f in host["latency"]["prefill"]] == ["measured", "estimated"]
    assert host["predicted_over_measured"]["prefill"]["value"] > 0
    assert [f["provenance"] for f in cells[("lordba", "sacc-32x32")]["latency"]["decode"]] == ["simulated"]
    assert cells[("lordba", "sacc-32x32")]["energy_per_token"]["decode"]["total"]["provenance"] == "simulated"
    assert cells[("lordba", "host")]["energy_per_token"]["prefill"]["total"]["provenance"] == "estimated"
    adapters = {a["variant"]: a for a in results["adapters"]}
    assert adapters["lordba"]["adapter_ratio_vs_lora_fp16"]["value"] > 7
    assert adapters["lora-fp16@r2"]["adapter_bytes"]["value"] <= adapters["lordba"]["adapter_bytes"]["value"]
    assert all(adapters[v]["training_state_bytes"]["value"] > 0 for v in adapters)
    # LoRDBA trained in sign form by default: its quality beside the plain conversion's, perplexity both ways
    acc = adapters["lordba"]["accuracy"]
    assert adapters["lordba"]["training"]["steps"] == 100 and "training" not in adapters["lora-fp16"]
    assert acc["output_rel_error"]["value"] < acc["conversion_output_rel_error"]["value"]
    assert {"task_accuracy", "conversion_task_accuracy", "perplexity_torch", "perplexity_onnxruntime"} <= set(acc)
    assert acc["perplexity_onnxruntime"]["value"] == pytest.approx(acc["perplexity_torch"]["value"], rel=1e-4)
    assert "pydoc_data" in acc["perplexity_torch"]["source"]
    swap = cells[("lordba", "sacc-32x32")]["hot_swap"]
    assert {h["link"] for h in swap} == {"emmc_read", "dram_copy"}
    assert swap[0]["seconds"]["value"] == pytest.approx(8320 / 250e6)


def test_a_failed_target_is_reported(matrix_dir: Path) -> None:
    results = json.loads((matrix_dir / "results.json").read_text())
    failed = [c for c in results["cells"] if c["target"] == "tiny-sacc"]
    assert failed and all(c["status"] == "failed" for c in failed)
    assert "fits the" in failed[0]["errors"][0]["error"]
    html = (matrix_dir / "report.html").read_text()
    assert "tiny-sacc" in html and "no tile" in html
    assert all(c["status"] == "ok" for c in results["cells"] if c["target"] != "tiny-sacc")


def test_report_regenerates_the_same_results_without_building(matrix_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(matrix_dir, copy)
    manifests = {p: p.stat().st_mtime_ns for p in copy.rglob("manifest.json")}
    (copy / "results.json").unlink()
    (copy / "report.html").unlink()
    write_report(copy)
    assert json.loads((copy / "results.json").read_text()) == json.loads((matrix_dir / "results.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("manifest.json")} == manifests


def test_report_renders_in_headless_chromium(matrix_dir: Path, tmp_path: Path) -> None:
    """Every section, every plot decoded, no console errors, and a screenshot that is not blank."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from hwsim.report.browser import FLAGS

    opts = Options()
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    opts.add_argument("--window-size=1400,1600")
    opts.binary_location = shutil.which("chromium") or "chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts)
    try:
        driver.get((matrix_dir / "report.html").resolve().as_uri())
        for section in SECTIONS:
            assert driver.find_elements("id", section), section
        decoded = driver.execute_script(
            "return Array.from(document.images).map(i => [i.id, i.complete && i.naturalWidth > 0]);")
        assert {f"plot-{p}" for p in PLOTS} <= {i for i, ok in decoded if ok}, decoded
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 800 and np.std(pixels) > 0.05  # not a blank page


@pytest.mark.slow
def test_minilm_report_agrees_with_the_formats_library_and_the_kernel_benchmark(tmp_path: Path) -> None:
    """The trained minilm adapter: the report's LoRDBA-vs-fp16-LoRA byte ratio is the formats library's, and
    its r=16 branch overhead is the kernel benchmark's measurement at the same shape (within run noise)."""
    import os

    from hwsim.overhead import branch_overhead
    from models.variants import evaluate_variants

    compile_matrix("minilm", formats=["lora-fp16", "lordba"], targets=["host"], out=tmp_path / "o", runs=5,
                   train_steps=10)
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    adapters = {a["variant"]: a for a in results["adapters"]}
    library = {r["adapter_format"]: r for r in evaluate_variants("minilm", None, [("lora-fp16", "fp32"),
                                                                                  ("lordba", "fp32")])}
    assert adapters["lordba"]["adapter_ratio_vs_lora_fp16"]["value"] == library["lordba"]["adapter_ratio_vs_lora_fp16"]
    assert adapters["lordba"]["adapter_bytes"]["value"] == library["lordba"]["adapter_bits"] // 8
    report = results["branch_overhead"]
    assert (report["tokens"], report["d"], report["r"]) == (16, 384, 16)
    bench = branch_overhead(16, 384, 16, os.cpu_count() or 1, rounds=5)
    for key in ("lordba_overhead", "lora_fp16_overhead"):
        assert report[key]["value"] == pytest.approx(bench[key], abs=0.1, rel=0.5), key
