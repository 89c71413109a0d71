"""Energy tables are per target and cited: every figure at the chip's own node and memory with a source,
bad or missing figures and sources rejected naming the file and the key, and the roofline bills each op class
from the target's own table and says which table it used."""

from pathlib import Path

import numpy as np
import pytest

from hwsim import roofline
from hwsim.errors import HwsimError
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
from targets import ENERGY_NAMES, EnergySpec, energy_record, known_targets, load_target
from targets.accel import AccelEnergy

TARGETS = Path(__file__).parents[1] / "targets"
# each target's node and memory (issue 16): the table must be the chip's own
NODES = {"host": (7, "DDR4-3200"), "cortex-a76": (16, "LPDDR4X-4267"), "cortex-a72": (28, "LPDDR4-3200"),
         "cortex-a55": (22, "LPDDR4-3200"), "jetson-orin": (8, "LPDDR5-6400"), "nvidia-a100": (7, "HBM2e"),
         "nvidia-h100": (5, "HBM3"), "sacc-32x32": (16, "LPDDR5-4000"), "systolic-fp16-32x32": (16, "LPDDR5-4000")}


def energy_of(name: str) -> EnergySpec | AccelEnergy:
    t = load_target(name)
    return t.accel.energy if t.accel is not None else t.energy


@pytest.mark.parametrize("name", sorted(NODES))
def test_every_builtin_table_is_at_its_node_and_memory_with_a_source_per_figure(name: str) -> None:
    e = energy_of(name)
    figures = [k for k in vars(e) if k not in ENERGY_NAMES]
    assert set(e.sources) == set(figures)
    assert all(s.strip() for s in e.sources.values())
    assert all(getattr(e, k) > 0 for k in figures)
    assert (e.process_nm, e.memory) == NODES[name]
    assert energy_record(load_target(name)) == {"name": e.table, "file": f"targets/{name}.toml",
                                                "process_nm": e.process_nm, "memory": e.memory}
    assert str(e.process_nm) in e.table and e.memory.split("-")[0] in e.table


def test_every_builtin_target_is_covered() -> None:
    assert set(NODES) == set(known_targets())


def test_logic_figures_scale_with_the_node() -> None:
    """Same Horowitz 45 nm figures, scaled: an older node costs more per op, and HBM less per byte than DDR."""
    fma = {n: energy_of(n).fp32_fma_pj for n in ("nvidia-h100", "host", "jetson-orin", "cortex-a76", "cortex-a55",
                                                 "cortex-a72")}
    assert list(fma.values()) == sorted(fma.values())
    assert fma["host"] == pytest.approx(4.6 * 0.094, rel=1e-2)  # 45 -> 7 nm, shared/notes/accelerator.md
    assert energy_of("nvidia-h100").dram_pj_per_byte < energy_of("cortex-a76").dram_pj_per_byte < \
        energy_of("cortex-a72").dram_pj_per_byte < energy_of("host").dram_pj_per_byte


def load_edited(tmp_path: Path, base: str, old: str, new: str) -> None:
    text = (TARGETS / f"{base}.toml").read_text().replace(f'name = "{base}"', 'name = "t"')
    assert old in text, old
    (tmp_path / "t.toml").write_text(text.replace(old, new, 1))
    load_target(str(tmp_path / "t.toml"))


@pytest.mark.parametrize("old, new, needle", [
    ("fp32_add_pj = 0.157\n", "", "missing key 'energy.fp32_add_pj'"),
    ("dram_pj_per_byte = 72.7", "dram_pj_per_byte = 0", "key 'energy.dram_pj_per_byte' must be a number above 0"),
    ("fp16_fma_pj = 0.261", "fp16_fma_pj = -0.261", "key 'energy.fp16_fma_pj' must be a number above 0"),
    ("fp32_fma_pj = 0.8", 'fp32_fma_pj = "cheap"', "key 'energy.fp32_fma_pj' must be a number above 0"),
    ("int8_mac_pj = 0.0522", "int8_mac_pj = true", "key 'energy.int8_mac_pj' must be a number above 0"),
    ("process_nm = 16\n", "process_nm = 16.5\n", "key 'energy.process_nm' must be an int above 0"),
    ('table = "BCM2712 16 nm logic + LPDDR4X-4267"\n', "", "missing key 'energy.table'"),
    ('memory = "LPDDR4X-4267"', 'memory = " "', "key 'energy.memory' must be a non-empty string"),
    ("sram_pj_per_byte = 0.217\n", "sram_pj_per_byte = 0.217\nleak_mw = 1.0\n", "unknown key 'energy.leak_mw'"),
    ("\ndram_pj_per_byte = \"LPDDR4X", "\nunused = \"LPDDR4X", "key 'energy.sources.unused' is not an energy figure"),
    ("\nsram_pj_per_byte = \"Horowitz", "\nl2_kib = \"Horowitz", "key 'energy.sources.l2_kib' is not an energy"),
    ("[energy.sources]\nprocess_nm = \"BCM2712", "[energy.sources]\nprocess_nm = \"\"\nx = \"",
     "key 'energy.sources.process_nm' must be a non-empty string"),
])
def test_bad_cpu_energy_tables_name_the_key(tmp_path: Path, old: str, new: str, needle: str) -> None:
    with pytest.raises(HwsimError) as e:
        load_edited(tmp_path, "cortex-a76", old, new)
    assert needle in str(e.value) and "t.toml" in str(e.value), str(e.value)


def test_a_figure_without_its_source_is_rejected(tmp_path: Path) -> None:
    text = (TARGETS / "cortex-a76.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith('dram_pj_per_byte = "'))
    with pytest.raises(HwsimError) as e:
        load_edited(tmp_path, "cortex-a76", line + "\n", "")
    assert str(e.value) == (f"{tmp_path / 't.toml'}: key 'energy.sources.dram_pj_per_byte' missing: every energy "
                            "figure needs its source")
    with pytest.raises(HwsimError, match=r"key 'energy.sources' missing or not a table"):
        load_edited(tmp_path, "cortex-a76", "\n[energy.sources]\n" + text.split("[energy.sources]\n")[1], "\n")


@pytest.mark.parametrize("old, new, needle", [
    ("ternary_add_pj = 0.0696", "ternary_add_pj = 0.0", "key 'energy.ternary_add_pj' must be a number above 0"),
    ("register_pj_per_byte = 0.095\n", "", "missing key 'energy.register_pj_per_byte'"),
    ('\nsign_add_pj = "Horowitz', '\nsign_add = "Horowitz', "key 'energy.sources.sign_add' is not an energy figure"),
    ("process_nm = 16\n", 'process_nm = 16\nsource = "Horowitz"\n', "unknown key 'energy.source'"),
])
def test_bad_accelerator_energy_tables_name_the_key(tmp_path: Path, old: str, new: str, needle: str) -> None:
    with pytest.raises(HwsimError) as e:
        load_edited(tmp_path, "sacc-32x32", old, new)
    assert needle in str(e.value) and "t.toml" in str(e.value), str(e.value)


def test_roofline_bills_each_op_class_from_the_targets_table() -> None:
    """fp32/fp16/int8 matmuls at their MAC figure, sign accumulation at an fp32 add per weight, float
    elementwise at an FMA per two ops, integer ops at an int32 add, a transpose at no compute; bytes at the
    DRAM figure; the result names the table."""
    m, k, n = 2, 64, 32

    def value(name: str, shape: tuple[int, ...], dtype: DType) -> Value:
        return Value(name, TensorType(shape, dtype))

    nodes, inputs = [], []
    for dt in (DType.FLOAT32, DType.FLOAT16, DType.INT8):
        x = value(f"x_{dt.value}", (m, k), dt)
        w = Value.const(f"w_{dt.value}", np.zeros((k, n), dt.numpy))
        inputs.append(x)
        nodes.append(Node(Op.MATMUL, [x, w], [value(f"y_{dt.value}", (m, n), DType.FLOAT32)], name=f"mm_{dt.value}"))
    xs = value("xs", (m, k), DType.FLOAT32)
    signs = Value.const("signs", np.zeros((n, k // 8), np.uint8))
    ys = value("ys", (m, n), DType.FLOAT32)
    nodes.append(Node(Op.SIGN_ACCUMULATE, [xs, signs], [ys], {"k": k, "pre": 0, "post": 0}, name="acc"))
    added = value("added", (m, n), DType.FLOAT32)
    nodes.append(Node(Op.ADD, [ys, ys], [added], name="add"))
    ints = value("ints", (m, k), DType.INT32)
    shifted = value("shifted", (m, k), DType.INT32)
    nodes.append(Node(Op.SHIFT_RIGHT, [ints, ints], [shifted], name="shift"))
    moved = value("moved", (n, m), DType.FLOAT32)
    nodes.append(Node(Op.TRANSPOSE, [added], [moved], {"perm": (1, 0)}, name="t"))
    graph = Graph("g", [*inputs, xs, ints], [moved, shifted], nodes)
    spec = load_target("cortex-a76")
    e = spec.energy
    est = roofline.estimate(graph, spec)
    macs = m * n * k
    compute = {"mm_float32": macs * e.fp32_fma_pj, "mm_float16": macs * e.fp16_fma_pj, "mm_int8": macs * e.int8_mac_pj,
               "acc": macs * e.fp32_add_pj, "add": m * n / 2 * e.fp32_fma_pj, "shift": m * k * e.int32_add_pj,
               "t": 0.0}
    for node in nodes:
        assert roofline.node_pj(node, spec) == pytest.approx(
            (compute[node.name], roofline.node_bytes(node) * e.dram_pj_per_byte)), node.name
    assert est["energy_pj"]["compute"] == pytest.approx(sum(compute.values()), abs=0.1)
    assert est["energy_pj"]["memory"] == pytest.approx(est["bytes"] * e.dram_pj_per_byte, abs=0.1)
    assert est["energy_table"] == {"name": "BCM2712 16 nm logic + LPDDR4X-4267", "file": "targets/cortex-a76.toml",
                                   "process_nm": 16, "memory": "LPDDR4X-4267"}
    assert "fp32_add_pj" in est["assumptions"]
