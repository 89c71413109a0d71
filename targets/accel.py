"""Accelerator descriptions (kind = "accel"): PE arrays, on-chip buffers, vector unit, DRAM and energy table.

A file names its arrays as `[arrays.NAME]` tables. Each array is `rows` x `cols` PEs with a dataflow
(`weight_stationary`, `output_stationary` or `weight_streaming`: weight-stationary whose next R x C weight fold
enters through a port as wide as the fold while the current one computes, so that a fold costs its m rows, not
the R cycles of filling it, and a batch-1 GEMV streams weights at the buffer's rate); its PEs are
multiply-accumulate units (`pe = "mac"`: fp16 and int8 natively, and sign/ternary weights the DMA decodes to
fp16 on load) or adders (`pe = "adder"`: sign and ternary weights only, read packed: y += x, y -= x, or skip).
`kinds` lists the layer kinds the array takes. `partial_sums` (optional) is the array's partial-sum and
drain policy on a weight-stationary or streaming array, whose K folds each produce partial sums:
`accumulator` (the default; TPU v1's) drains every fold's sums into the fp32 accumulator buffer, a read and a
write of 4 bytes per output element and fold; `pe` keeps each running sum in its PE's register across the
folds and drains it once, complete (ZigZag's tpu_like mapping, whose 2-byte O register holds it), so the
accumulator sees one write per output. Either way each MAC reads and writes its PE's partial-sum register
(energy.psum_register_pj_per_access); an output-stationary array accumulates in its PEs by construction.
`staging` (optional) is how the array's operands are staged: `tiles` (the default: the compiler tiles the layer
to the buffers, each operand in two slots, loaded once per tile it is reused in) or `window` (SCALE-Sim 3's
read buffers, codegen/accel/window.py: each operand buffer is a window over the operand in the order the array
consumes it, half active and half prefetching, moving only forward, SCALE-Sim's fold order, a weight-stationary
array writing every K fold's sums to DRAM). [dram] `channels` (optional): `shared` (the default: one channel
for every transfer) or `per_buffer` (each buffer its own port at the full bandwidth, as SCALE-Sim's ifmap,
filter and ofmap interfaces); `prefetch` (optional): `in_order` (the default: a load, or a window fill, starts in the
load queue's program order, after the slot it overwrites is read: double buffering) or `run_ahead` (window
fills start as soon as their channel is free, however far ahead of their reads, as SCALE-Sim times each
prefetch from the end of the one before; window staging only: a tile load that ran ahead would overwrite a
slot still being read).
Buffers are `weight`, `activation` and `accumulator`; the vector unit applies scales and elementwise ops to
buffered tiles. Everything the accelerator lacks runs on `host` (a CPU target) and is billed with its figures.
"""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError

DATAFLOWS = ("weight_stationary", "output_stationary", "weight_streaming")
PARTIAL_SUMS = ("accumulator", "pe")  # where a WS/streaming array's partial sums live between K folds
STAGINGS = ("tiles", "window")  # how operands are staged in the buffers (module docstring)
CHANNELS = ("shared", "per_buffer")  # DRAM ports
PREFETCHES = ("in_order", "run_ahead")  # when a load may start
PE_KINDS = {"mac": ("fp16", "int8", "sign", "ternary"), "adder": ("sign", "ternary")}
BUFFERS = ("weight", "activation", "accumulator")
VECTOR_OPS = ("ADD", "SUB", "MUL", "MAX", "MIN", "NEG", "RELU", "CAST")  # IR ops a vector unit may list


@dataclass(frozen=True)
class ArraySpec:
    name: str
    rows: int
    cols: int
    dataflow: str
    pe: str
    kinds: tuple[str, ...]
    partial_sums: str = "accumulator"
    staging: str = "tiles"

    @property
    def pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class BufferSpec:
    kib: int
    banks: int
    bytes_per_cycle: int  # what the buffer delivers to (or takes from) the array per cycle

    @property
    def bytes(self) -> int:
        return self.kib * 1024


@dataclass(frozen=True)
class VectorSpec:
    lanes: int  # elements per cycle
    ops: tuple[str, ...]


@dataclass(frozen=True)
class DramSpec:
    bandwidth_bytes_per_cycle: float  # per channel
    latency_cycles: int
    channels: str = "shared"
    prefetch: str = "in_order"


@dataclass(frozen=True)
class AccelEnergy:
    """pJ per operation by kind and per byte by memory level; `table` is the name reports cite, `sources` says
    where each figure comes from (validated as a CPU's or GPU's [energy] table is)."""

    table: str
    memory: str  # the DRAM the dram_* figures are for
    sources: dict[str, str]
    process_nm: int
    fp16_mac_pj: float
    int8_mac_pj: float
    sign_add_pj: float
    ternary_add_pj: float
    vector_op_pj: float
    register_pj_per_byte: float  # PE-local weight registers, per byte an op reads there
    psum_register_pj_per_access: float  # a PE's partial-sum register, per read or write (two per MAC)
    weight_sram_pj_per_byte: float
    activation_sram_pj_per_byte: float
    accumulator_sram_pj_per_byte: float
    dram_read_pj_per_byte: float
    dram_write_pj_per_byte: float

    def op_pj(self, pe: str, kind: str) -> float:
        """One PE operation: a MAC at the operands' precision (a MAC PE runs decoded sign/ternary weights as
        fp16 MACs), or an add/subtract on an adder PE."""
        if pe == "adder":
            return self.sign_add_pj if kind == "sign" else self.ternary_add_pj
        return self.int8_mac_pj if kind == "int8" else self.fp16_mac_pj


@dataclass(frozen=True)
class AreaSpec:
    """A relative area proxy for ranking designs (an fp16 MAC PE = 1)."""

    mac_pe_units: float
    adder_pe_units: float
    sram_units_per_kib: float


@dataclass(frozen=True)
class AccelSpec:
    clock_mhz: float
    host: str  # the CPU target that runs what the accelerator lacks
    arrays: tuple[ArraySpec, ...]
    buffers: dict[str, BufferSpec]
    vector: VectorSpec
    dram: DramSpec
    energy: AccelEnergy
    area: AreaSpec

    def area_units(self) -> float:
        """PEs at their kind's area plus the buffers' KiB at the SRAM's."""
        pes = sum(a.pes * (self.area.mac_pe_units if a.pe == "mac" else self.area.adder_pe_units)
                  for a in self.arrays)
        return pes + sum(b.kib for b in self.buffers.values()) * self.area.sram_units_per_kib

    def array_for(self, kind: str) -> ArraySpec | None:
        """The array that takes `kind` natively with the most PEs, else the largest that takes it at all."""
        fits = [a for a in self.arrays if kind in a.kinds]
        native = [a for a in fits if a.pe == "adder" or kind in ("fp16", "int8")]
        return max(native or fits, key=lambda a: a.pes, default=None)


def _numbers(spec: type) -> dict[str, tuple[type, bool]]:
    return {f.name: (float if f.type in (float, "float") else int, True) for f in fields(spec)}


SECTIONS: dict[str, dict[str, tuple[type, bool]]] = {
    "": {"name": (str, True), "kind": (str, True), "description": (str, True), "clock_mhz": (float, True),
         "host": (str, True), "arrays": (dict, True), "buffers": (dict, True), "vector": (dict, True),
         "dram": (dict, True), "energy": (dict, True), "area": (dict, True), "links": (dict, False)},
    "array": {"rows": (int, True), "cols": (int, True), "dataflow": (str, True), "pe": (str, True),
              "kinds": (list, True), "partial_sums": (str, False), "staging": (str, False)},
    "buffer": _numbers(BufferSpec),
    "vector": {"lanes": (int, True), "ops": (list, True)},
    "dram": {"bandwidth_bytes_per_cycle": (float, True), "latency_cycles": (int, True), "channels": (str, False),
             "prefetch": (str, False)},
    "area": _numbers(AreaSpec),
}


def _choice(path: Path, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise HwsimError(f"{path}: key '{key}' must be one of {', '.join(allowed)}, got {value!r}")


def parse_accel(data: dict[str, Any], path: Path, check: Any, energy: Any) -> AccelSpec:
    """The validated [arrays.*], [buffers.*], [vector], [dram] and [energy] tables of an accel file; `check`
    is the loader's key checker (unknown, missing, mistyped and negative keys), `energy` its [energy] parser
    (figures and their sources)."""
    check(data, SECTIONS[""], "", path)
    arrays = []
    if not data["arrays"]:
        raise HwsimError(f"{path}: key 'arrays' needs at least one [arrays.NAME] table")
    for name, table in data["arrays"].items():
        where = f"arrays.{name}"
        if not isinstance(table, dict):
            raise HwsimError(f"{path}: key '{where}' must be a table")
        check(table, SECTIONS["array"], where, path)
        _choice(path, f"{where}.dataflow", table["dataflow"], DATAFLOWS)
        _choice(path, f"{where}.pe", table["pe"], tuple(PE_KINDS))
        _choice(path, f"{where}.partial_sums", table.get("partial_sums", PARTIAL_SUMS[0]), PARTIAL_SUMS)
        _choice(path, f"{where}.staging", table.get("staging", STAGINGS[0]), STAGINGS)
        for kind in table["kinds"]:
            _choice(path, f"{where}.kinds", kind, PE_KINDS[table["pe"]])
        if not table["rows"] or not table["cols"] or not table["kinds"]:
            raise HwsimError(f"{path}: key '{where}' needs rows, cols and kinds that are not zero or empty")
        arrays.append(ArraySpec(name, table["rows"], table["cols"], table["dataflow"], table["pe"],
                                tuple(table["kinds"]), table.get("partial_sums", PARTIAL_SUMS[0]),
                                table.get("staging", STAGINGS[0])))
    buffers = {}
    for name in data["buffers"]:
        _choice(path, f"buffers.{name}", name, BUFFERS)
    for name in BUFFERS:
        if name not in data["buffers"]:
            raise HwsimError(f"{path}: missing key 'buffers.{name}'")
        check(data["buffers"][name], SECTIONS["buffer"], f"buffers.{name}", path)
        buffers[name] = BufferSpec(**data["buffers"][name])
        if not buffers[name].kib or not buffers[name].bytes_per_cycle:
            raise HwsimError(f"{path}: key 'buffers.{name}' needs kib and bytes_per_cycle above zero")
    check(data["vector"], SECTIONS["vector"], "vector", path)
    for op in data["vector"]["ops"]:
        _choice(path, "vector.ops", op, VECTOR_OPS)
    check(data["dram"], SECTIONS["dram"], "dram", path)
    _choice(path, "dram.channels", data["dram"].get("channels", CHANNELS[0]), CHANNELS)
    _choice(path, "dram.prefetch", data["dram"].get("prefetch", PREFETCHES[0]), PREFETCHES)
    if data["dram"].get("prefetch") == "run_ahead" and any(a.staging != "window" for a in arrays):
        raise HwsimError(f"{path}: key 'dram.prefetch' = \"run_ahead\" needs every array's staging = \"window\" (a "
                         "tile load that ran ahead would overwrite a slot still being read)")
    energy_table = energy(data["energy"], AccelEnergy, path)
    check(data["area"], SECTIONS["area"], "area", path)
    if not data["dram"]["bandwidth_bytes_per_cycle"] or not data["vector"]["lanes"] or not data["clock_mhz"]:
        raise HwsimError(f"{path}: keys 'clock_mhz', 'vector.lanes' and 'dram.bandwidth_bytes_per_cycle' must be "
                         "above zero")
    return AccelSpec(clock_mhz=float(data["clock_mhz"]), host=data["host"], arrays=tuple(arrays), buffers=buffers,
                     vector=VectorSpec(data["vector"]["lanes"], tuple(data["vector"]["ops"])),
                     dram=DramSpec(**data["dram"]), energy=AccelEnergy(**energy_table), area=AreaSpec(**data["area"]))
