"""The report's use of target files, on a synthetic build directory (no TVM): decode bandwidth efficiency
against each target's peak DRAM bandwidth, for measured and simulated latencies only, and energy figures that
name the energy table they used (or say it was not recorded)."""

import json
from pathlib import Path
from typing import Any

import pytest

from hwsim.report.collect import collect
from hwsim.report.render import sections, to_html, to_markdown
from targets import energy_record, load_target

WEIGHTS = 1_000_000
PHASES = {"prefill": {"input_ids": [1, 16]}, "decode": {"input_ids": [1, 1], "past_key": [1, 2, 8, 16]}}
DECODE_INPUTS = [{"name": "input_ids", "shape": [1, 1], "dtype": "int64"},
                 {"name": "past_key", "shape": [1, 2, 8, 16], "dtype": "float32"}]  # a KV cache: streamed too
MOVED = WEIGHTS + 8 + 2 * 8 * 16 * 4


def manifest(target: str, phase: str, ms: float) -> dict[str, Any]:
    """A manifest with what the report reads: host measured + roofline, accelerator simulated, the H100 a
    roofline only and no energy table (an old manifest), a target file given by path."""
    m: dict[str, Any] = {
        "inputs": DECODE_INPUTS if phase == "decode" else [{"name": "input_ids", "shape": [1, 16], "dtype": "int64"}],
        "memory": {"weight_bytes": WEIGHTS, "peak_activation_bytes": 4096},
        "energy": {"provenance": "estimated", "model": f"roofline from targets/{target}.toml", "compute_pj": 1e6,
                   "memory_pj": 9e6}}
    roof = {"median_ms": ms / 2, "model": f"roofline from targets/{target}.toml", "top_nodes": []}
    if target == "host":
        m["latency"] = {"tvm": {"median_ms": ms, "device": "host: test CPU"}, "roofline": roof,
                        "measured_over_estimated": 2.0}
        m["energy"]["table"] = energy_record(load_target("host"))
    elif target == "sacc-32x32":
        model = "hwsim cycle-approximate accelerator model, targets/sacc-32x32.toml"
        m["latency"] = {"simulated": {"median_ms": ms, "model": model}}
        m["simulation"] = {"model": model, "clock_mhz": 1000.0, "layers": []}
        m["energy"] = {"provenance": "simulated", "model": model, "compute_pj": 1e6, "memory_pj": 9e6,
                       "table": {**energy_record(load_target("sacc-32x32")),
                                 "host_layers": energy_record(load_target("cortex-a76"))}}
    else:
        m["latency"] = {"roofline": roof} if target == "nvidia-h100" else {"tvm": {"median_ms": ms, "device": "x"}}
    return m


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    targets = {"host": "cpu", "sacc-32x32": "accel", "nvidia-h100": "gpu", "my-board": "cpu"}
    jobs = []
    for target in targets:
        for phase in PHASES:
            d = f"lordba/{target}/{phase}"
            (tmp_path / d).mkdir(parents=True)
            (tmp_path / d / "manifest.json").write_text(json.dumps(manifest(target, phase, 0.5)))
            jobs.append({"variant": "lordba", "target": target, "phase": phase, "dir": d, "status": "ok"})
    matrix = {"model": {"name": "tiny", "source": "test"}, "phases": PHASES,
              "targets": [{"name": t, "kind": k, "description": t, "links": {}} for t, k in targets.items()],
              "variants": [{"id": "lordba", "adapter_format": "lordba", "base_format": "fp32", "rank": 4,
                            "matched": "rank", "adapter_bits": 8000, "base_bits": 8 * WEIGHTS}],
              "matched_bytes_budget": 1000, "jobs": jobs}
    (tmp_path / "matrix.json").write_text(json.dumps(matrix))
    return tmp_path


def test_decode_bandwidth_efficiency_divides_the_streaming_bound_by_measured_and_simulated_latency(
        build_dir: Path) -> None:
    r = collect(build_dir)
    cells = {c["target"]: c for c in r["cells"]}
    host = cells["host"]["bandwidth_efficiency"]
    assert list(host) == ["decode"]  # decode only
    [measured] = host["decode"]  # the roofline estimate gets none
    assert measured["provenance"] == "measured" and measured["unit"] == "ratio"
    assert measured["value"] == pytest.approx(MOVED / 20e9 * 1e3 / 0.5)
    assert "targets/host.toml cpu.dram_bandwidth_gbs" in measured["source"]
    assert "host: test CPU" in measured["source"] and f"{MOVED:,} B" in measured["source"]
    [simulated] = cells["sacc-32x32"]["bandwidth_efficiency"]["decode"]
    assert simulated["provenance"] == "simulated"
    assert simulated["value"] == pytest.approx(MOVED / 32e9 * 1e3 / 0.5)  # 32 B/cycle at 1 GHz
    assert "dram.bandwidth_bytes_per_cycle x clock_mhz" in simulated["source"]
    assert cells["nvidia-h100"]["bandwidth_efficiency"]["decode"] == []  # estimated only
    assert cells["my-board"]["bandwidth_efficiency"]["decode"] == []  # not a built-in target: no bandwidth known


def test_energy_figures_name_the_table_they_used(build_dir: Path) -> None:
    r = collect(build_dir)
    cells = {c["target"]: c for c in r["cells"]}
    host = cells["host"]["energy_per_token"]["decode"]["total"]
    assert host["source"] == "targets/host.toml [energy] Zen 3 class, TSMC 7 nm logic + DDR4-3200"
    sacc = cells["sacc-32x32"]["energy_per_token"]["decode"]["compute"]["source"]
    assert sacc.startswith("targets/sacc-32x32.toml [energy] edge accelerator")
    assert sacc.endswith("host layers: targets/cortex-a76.toml [energy] BCM2712 16 nm logic + LPDDR4X-4267")
    old = cells["nvidia-h100"]["energy_per_token"]["decode"]["memory"]["source"]
    assert old == "roofline from targets/nvidia-h100.toml; energy table not recorded"
    tables = {t["name"]: t["energy_table"] for t in r["targets"]}
    assert tables["host"] == energy_record(load_target("host")) and tables["nvidia-h100"] is None
    assert tables["sacc-32x32"]["process_nm"] == 16


def test_report_renders_the_efficiency_column_and_the_tables(build_dir: Path) -> None:
    secs = sections(collect(build_dir))
    md, page = to_markdown(secs, "t", {}), to_html(secs, "t", {})
    for text in (md, page):
        assert "host decode bandwidth efficiency" in text
        assert f"{100 * MOVED / 20e9 * 1e3 / 0.5:.1f}% [M]" in text
        assert f"{100 * MOVED / 32e9 * 1e3 / 0.5:.1f}% [S]" in text
        assert "Zen 3 class, TSMC 7 nm logic + DDR4-3200" in text and "LPDDR5-4000" in text
    assert "| nvidia-h100 | table not recorded | - | - | - |" in md


def test_a_one_block_model_is_scaled_to_its_layer_count_and_says_so(build_dir: Path) -> None:
    """llama2-7b-block: the report multiplies per-block latency, energy and bytes by the layers, each figure
    marked scaled; a model without a scale gets no such section."""
    from hwsim.report import validate

    assert collect(build_dir)["scaled"] is None
    matrix = json.loads((build_dir / "matrix.json").read_text())
    matrix["model"]["scaled"] = {"layers": 32, "of": "Llama-2-7B (32 decoder blocks)"}
    (build_dir / "matrix.json").write_text(json.dumps(matrix))
    r = collect(build_dir)
    validate(r)
    sc = r["scaled"]
    host = next(c for c in sc["cells"] if c["target"] == "host" and c["phase"] == "decode")
    assert host["latency"]["value"] == pytest.approx(32 * 0.5) and host["latency"]["provenance"] == "measured"
    assert host["latency"]["scaled"] == 32 and "x32 layers, scaled from one block" in host["latency"]["source"]
    assert host["energy_per_token"]["value"] == pytest.approx(32 * 10.0)  # (1e6 + 9e6) pJ per token = 10 uJ
    [weights] = sc["variants"]
    assert weights["base_weight_bytes"]["value"] == 32 * WEIGHTS
    md = to_markdown(sections(r), "t", {})
    assert "Scaled to 32 layers (x32, not measured as a whole)" in md and "16 ms [M]" in md
