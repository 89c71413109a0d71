"""Hardware targets as data: TOML files beside this module, validated when loaded.

Unknown keys, missing keys, wrong types and negative numbers are errors naming the file and the key
(TOML itself rejects duplicate keys, and the error names the line). Units are part of key names.
Every [energy] table names itself (`table`), its DRAM (`memory`) and, in [energy.sources], where each of its
figures comes from: a figure that is missing, not above zero or without a source is an error too.
Nothing here imports TVM: `codegen` turns a `Target` into a TVM target.
"""

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError
from targets.accel import AccelSpec, parse_accel

TARGET_DIR = Path(__file__).parent
KINDS = ("cpu", "gpu", "accel")


@dataclass(frozen=True)
class TvmTarget:
    """The TVM target dict: for CPUs `mcpu = "native"` resolves to this machine's CPU, `num_cores = 0` to
    all; GPUs name their `arch` (sm_90)."""

    kind: str
    mcpu: str = ""
    num_cores: int = 0
    arch: str = ""
    mtriple: str = ""
    mattr: tuple[str, ...] = ()
    mca_cpu: str = ""  # llvm-mca's -mcpu for this core, where its model differs from mcpu




@dataclass(frozen=True)
class CpuSpec:
    """What a roofline estimate needs: peak compute, caches and memory bandwidth."""

    clock_ghz: float
    vector_bits: int
    fma_pipes: int  # SIMD FMA issue per cycle per core
    l1d_kib: int
    l2_kib: int
    l3_kib: int
    dram_bandwidth_gbs: float


@dataclass(frozen=True)
class GpuSpec:
    """What a GPU roofline estimate needs: peak rates by unit, memory bandwidth, launch cost."""

    sm_count: int
    clock_ghz: float
    fp16_tensor_tflops: float  # dense
    fp32_tflops: float
    int8_tensor_tops: float  # dense
    dram_bandwidth_gbs: float
    l2_kib: int
    smem_kib_per_sm: int
    power_w: float
    launch_overhead_us: float


@dataclass(frozen=True)
class EnergySpec:
    """Energy per operation and per byte moved at the chip's own process node and memory; `table` is the name
    reports cite, `sources` says where each figure comes from."""

    table: str
    memory: str  # the DRAM the dram_* figures are for
    sources: dict[str, str]
    process_nm: int
    fp32_fma_pj: float
    fp16_fma_pj: float
    fp32_add_pj: float  # an add of float activations (sign/ternary accumulation)
    int8_mac_pj: float
    int32_add_pj: float
    sram_pj_per_byte: float
    dram_pj_per_byte: float


@dataclass(frozen=True)
class Target:
    """A target file: CPUs and GPUs have a TVM target and an energy table of that shape; an accelerator
    (kind "accel") has its own description (targets/accel.py), energy table included."""

    name: str
    kind: str
    description: str
    tvm: TvmTarget | None
    cpu: CpuSpec | None
    gpu: GpuSpec | None
    energy: EnergySpec | None
    source: Path
    accel: AccelSpec | None = None
    links: dict[str, float] = field(default_factory=dict)  # "<link>_mb_per_s": what an adapter ships over


def _numbers(spec: type) -> dict[str, tuple[type, bool]]:
    return {f.name: (float if f.type in (float, "float") else int, True) for f in fields(spec)}


ENERGY_NAMES = ("table", "memory", "sources")  # an [energy] table's keys that are not figures


def parse_energy(table: dict[str, Any], spec: type, path: Path) -> dict[str, Any]:
    """The validated [energy] table of `spec`'s shape (EnergySpec, AccelEnergy) as its keyword arguments:
    `table` and `memory` non-empty strings, every figure a number above zero (process_nm an int) with a
    non-empty source in [energy.sources], and nothing else."""
    figures = {f.name: int if f.type in (int, "int") else float for f in fields(spec) if f.name not in ENERGY_NAMES}
    known = [*ENERGY_NAMES, *figures]
    for key in table:
        if key not in known:
            raise HwsimError(f"{path}: unknown key 'energy.{key}' (known: {', '.join(sorted(known))})")
    for key in ("table", "memory"):
        if key not in table:
            raise HwsimError(f"{path}: missing key 'energy.{key}'")
        if not isinstance(table[key], str) or not table[key].strip():
            raise HwsimError(f"{path}: key 'energy.{key}' must be a non-empty string, got {table[key]!r}")
    for key, typ in figures.items():
        if key not in table:
            raise HwsimError(f"{path}: missing key 'energy.{key}'")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, typ | int) or value <= 0:
            raise HwsimError(f"{path}: key 'energy.{key}' must be {'an int' if typ is int else 'a number'} above 0, "
                             f"got {value!r}")
    sources = table.get("sources")
    if not isinstance(sources, dict):
        raise HwsimError(f"{path}: key 'energy.sources' missing or not a table: every energy figure needs its source")
    for key, text in sources.items():
        if key not in figures:
            raise HwsimError(f"{path}: key 'energy.sources.{key}' is not an energy figure "
                             f"(figures: {', '.join(figures)})")
        if not isinstance(text, str) or not text.strip():
            raise HwsimError(f"{path}: key 'energy.sources.{key}' must be a non-empty string, got {text!r}")
    for key in figures:
        if key not in sources:
            raise HwsimError(f"{path}: key 'energy.sources.{key}' missing: every energy figure needs its source")
    return {**table, **{k: float(table[k]) if t is float else table[k] for k, t in figures.items()}}


# the sections each kind of target has, and their keys: (type, required)
_SECTIONS: dict[str, dict[str, dict[str, tuple[type, bool]]]] = {
    "cpu": {
        "": {"name": (str, True), "kind": (str, True), "description": (str, True), "tvm": (dict, True),
             "cpu": (dict, True), "energy": (dict, True), "links": (dict, False)},
        "tvm": {"kind": (str, True), "mcpu": (str, True), "num_cores": (int, True), "mtriple": (str, False),
                "mattr": (list, False), "mca_cpu": (str, False)},
        "cpu": _numbers(CpuSpec)},
    "gpu": {
        "": {"name": (str, True), "kind": (str, True), "description": (str, True), "tvm": (dict, True),
             "gpu": (dict, True), "energy": (dict, True), "links": (dict, False)},
        "tvm": {"kind": (str, True), "arch": (str, True)},
        "gpu": _numbers(GpuSpec)},
}


def _check(table: dict[str, Any], schema: dict[str, tuple[type, bool]], section: str, path: Path) -> None:
    prefix = f"{section}." if section else ""
    for key in table:
        if key not in schema:
            raise HwsimError(f"{path}: unknown key '{prefix}{key}' (known: {', '.join(sorted(schema))})")
    for key, (typ, required) in schema.items():
        if key not in table:
            if required:
                raise HwsimError(f"{path}: missing key '{prefix}{key}'")
            continue
        value = table[key]
        ok = isinstance(value, typ) or (typ is float and isinstance(value, int))
        if not ok or (typ in (int, float) and isinstance(value, bool)):
            raise HwsimError(f"{path}: key '{prefix}{key}' must be {typ.__name__}, got {value!r}")
        if typ in (int, float) and value < 0:
            raise HwsimError(f"{path}: key '{prefix}{key}' must be >= 0, got {value}")


LINK_UNIT = "_mb_per_s"


def _links(data: dict[str, Any], path: Path) -> dict[str, float]:
    """The optional [links] table: each key names a link and ends in its unit, MB/s."""
    links = data.get("links", {})
    for key, value in links.items():
        if not key.endswith(LINK_UNIT) or key == LINK_UNIT:
            raise HwsimError(f"{path}: key 'links.{key}' must be a link name ending in '{LINK_UNIT}'")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise HwsimError(f"{path}: key 'links.{key}' must be a number above 0, got {value!r}")
    return {k: float(v) for k, v in links.items()}


def load_target_file(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HwsimError(f"{path}: invalid TOML ({e})") from None
    return target_from_data(data, path)


def target_from_data(data: dict[str, Any], path: Path) -> Target:
    """A target from parsed TOML, validated as if loaded from `path` (sweeps patch a file's tables)."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise HwsimError(f"{path}: key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "accel":
        accel = parse_accel(data, path, _check, parse_energy)
        host = load_target(accel.host) if accel.host in known_targets() else None
        if host is None or host.kind != "cpu":
            raise HwsimError(f"{path}: key 'host' must name a CPU target (known: "
                             f"{', '.join(t for t in known_targets() if t != path.stem)}), got {accel.host!r}")
        return Target(name=data["name"], kind=kind, description=data["description"], tvm=None, cpu=None, gpu=None,
                      energy=None, source=path, accel=accel, links=_links(data, path))
    sections = _SECTIONS[kind]
    _check(data, sections[""], "", path)
    for section, schema in sections.items():
        if section and section in data:
            _check(data[section], schema, section, path)
    t = data["tvm"]
    tvm = TvmTarget(kind=t["kind"], mcpu=t.get("mcpu", ""), num_cores=t.get("num_cores", 0), arch=t.get("arch", ""),
                    mtriple=t.get("mtriple", ""), mattr=tuple(t.get("mattr", ())), mca_cpu=t.get("mca_cpu", ""))
    return Target(name=data["name"], kind=kind, description=data["description"], tvm=tvm,
                  cpu=CpuSpec(**data["cpu"]) if kind == "cpu" else None,
                  gpu=GpuSpec(**data["gpu"]) if kind == "gpu" else None,
                  energy=EnergySpec(**parse_energy(data["energy"], EnergySpec, path)), source=path,
                  links=_links(data, path))


def energy_record(target: Target) -> dict[str, Any]:
    """The energy table a figure was computed with, as manifests and reports record it: its name, file,
    process node and DRAM."""
    e = target.accel.energy if target.accel is not None else target.energy
    builtin = target.source.resolve().parent == TARGET_DIR.resolve()
    return {"name": e.table, "file": f"targets/{target.source.name}" if builtin else str(target.source),
            "process_nm": e.process_nm, "memory": e.memory}


def cite_energy(record: dict[str, Any]) -> str:
    """How a figure names the energy table it used: "targets/x.toml [energy] <name>", and the host's table
    for an accelerator's host-run layers (`host_layers` of the record)."""
    host = record.get("host_layers")
    return f"{record['file']} [energy] {record['name']}" + (
        f"; host layers: {host['file']} [energy] {host['name']}" if host else "")


def known_targets() -> list[str]:
    return sorted(p.stem for p in TARGET_DIR.glob("*.toml"))


def load_target(name: str) -> Target:
    """A built-in target by name, or a TOML file by path."""
    path = Path(name)
    if path.suffix != ".toml":
        path = TARGET_DIR / f"{name}.toml"
        if not path.is_file():
            raise HwsimError(f"unknown target '{name}' (known: {', '.join(known_targets())})")
    elif not path.is_file():
        raise HwsimError(f"{path}: no such target file")
    target = load_target_file(path)
    if path.parent == TARGET_DIR and target.name != path.stem:
        raise HwsimError(f"{path}: key 'name' is '{target.name}', expected '{path.stem}'")
    return target
