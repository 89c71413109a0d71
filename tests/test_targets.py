"""Targets are data: the loader rejects bad files naming the key, and lists known targets."""

from pathlib import Path

import pytest

from hwsim.errors import HwsimError
from targets import known_targets, load_target

GOOD = """name = "t"
kind = "cpu"
description = "test"
[tvm]
kind = "llvm"
mcpu = "generic"
num_cores = 2
[cpu]
clock_ghz = 2
vector_bits = 128
fma_pipes = 2
l1d_kib = 64
l2_kib = 512
l3_kib = 0
dram_bandwidth_gbs = 17.1
[energy]
table = "test 45 nm + DDR"
memory = "DDR"
process_nm = 45
fp32_fma_pj = 4.6
fp16_fma_pj = 1.5
fp32_add_pj = 0.9
int8_mac_pj = 0.3
int32_add_pj = 0.1
sram_pj_per_byte = 1.25
dram_pj_per_byte = 162.5
[energy.sources]
process_nm = "test"
fp32_fma_pj = "test"
fp16_fma_pj = "test"
fp32_add_pj = "test"
int8_mac_pj = "test"
int32_add_pj = "test"
sram_pj_per_byte = "test"
dram_pj_per_byte = "test"
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return str(p)


def test_builtin_targets_load() -> None:
    assert {"host", "cortex-a76", "cortex-a55", "cortex-a72", "nvidia-h100", "nvidia-a100", "jetson-orin",
            "sacc-32x32", "systolic-fp16-32x32"} <= set(known_targets())
    for name in known_targets():
        t = load_target(name)
        assert t.name == name
        if t.kind == "cpu":
            assert t.tvm.kind == "llvm" and t.cpu.clock_ghz > 0 and t.gpu is None and t.energy.fp32_fma_pj > 0
        elif t.kind == "gpu":
            assert t.tvm.kind == "cuda" and t.gpu.sm_count > 0 and t.gpu.dram_bandwidth_gbs > 0 and t.cpu is None
            assert t.energy.fp32_fma_pj > 0
        else:
            assert t.kind == "accel" and t.accel.arrays and t.accel.energy.dram_read_pj_per_byte > 0
            assert load_target(t.accel.host).kind == "cpu"
    assert {load_target(n).tvm.arch for n in ("nvidia-a100", "jetson-orin", "nvidia-h100")} == {"sm_80", "sm_87",
                                                                                                "sm_90"}
    a76 = load_target("cortex-a76")
    assert a76.tvm.mtriple == "aarch64-linux-gnu" and a76.tvm.mcpu == "cortex-a76" and a76.tvm.num_cores == 4


def test_good_file_loads(tmp_path: Path) -> None:
    assert load_target(write(tmp_path, GOOD)).tvm.num_cores == 2


@pytest.mark.parametrize("text, needle", [
    (GOOD.replace("[energy.sources]", "sram_kib = 2.0\n[energy.sources]"), "unknown key 'energy.sram_kib'"),
    (GOOD.replace("l2_kib = 512", "l2_kib = -512"), "key 'cpu.l2_kib' must be >= 0"),
    (GOOD.replace("fma_pipes = 2\n", ""), "missing key 'cpu.fma_pipes'"),
    (GOOD.replace("vector_bits = 128", "vector_bits = 128\nvector_bits = 256"), "invalid TOML"),
    (GOOD.replace("clock_ghz = 2", 'clock_ghz = "fast"'), "key 'cpu.clock_ghz' must be float"),
    (GOOD.replace('kind = "cpu"\n', 'kind = "cpu"\ncolour = "red"\n'), "unknown key 'colour'"),
    (GOOD.replace('mcpu = "generic"\n', ""), "missing key 'tvm.mcpu'"),
    (GOOD.replace("num_cores = 2", "num_cores = -1"), "key 'tvm.num_cores' must be >= 0"),
    (GOOD.replace("num_cores = 2", 'num_cores = "two"'), "key 'tvm.num_cores' must be int"),
    (GOOD.replace("num_cores = 2", "num_cores = 2\nnum_cores = 4"), "invalid TOML"),  # duplicate key
    (GOOD.replace('kind = "cpu"', 'kind = "fpga"'), "key 'kind' must be one of cpu"),
    (GOOD.replace('kind = "cpu"', 'kind = "gpu"'), "unknown key 'cpu'"),  # a GPU has a [gpu] section
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(HwsimError, match=None) as e:
        load_target(write(tmp_path, text))
    assert needle in str(e.value) and "t.toml" in str(e.value)


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(HwsimError, match=r"unknown target 'nope' \(known: .*host"):
        load_target("nope")


def test_bad_gpu_files_name_the_key(tmp_path: Path) -> None:
    good = (Path(__file__).parents[1] / "targets" / "nvidia-h100.toml").read_text().replace(
        'name = "nvidia-h100"', 'name = "t"')
    assert load_target(write(tmp_path, good)).gpu.sm_count == 132
    for text, needle in [(good.replace("sm_count = 132\n", ""), "missing key 'gpu.sm_count'"),
                         (good.replace('arch = "sm_90"', 'arch = "sm_90"\nmcpu = "x"'), "unknown key 'tvm.mcpu'"),
                         (good.replace("power_w = 700.0", "power_w = -1.0"), "key 'gpu.power_w' must be >= 0")]:
        with pytest.raises(HwsimError) as e:
            load_target(write(tmp_path, text))
        assert needle in str(e.value), str(e.value)
