"""Hardware targets as data: TOML files beside this module, validated when loaded.

Unknown keys, missing keys and wrong types are errors naming the file and key (TOML itself rejects
duplicate keys). Nothing here imports TVM: `codegen` turns a `Target` into a TVM target.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError

TARGET_DIR = Path(__file__).parent
KINDS = ("cpu",)


@dataclass(frozen=True)
class TvmTarget:
    kind: str
    mcpu: str
    num_cores: int
    mtriple: str = ""
    mattr: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    description: str
    tvm: TvmTarget
    source: Path


_SCHEMA: dict[str, dict[str, tuple[type, bool]]] = {
    "": {"name": (str, True), "kind": (str, True), "description": (str, True), "tvm": (dict, True)},
    "tvm": {"kind": (str, True), "mcpu": (str, True), "num_cores": (int, True), "mtriple": (str, False),
            "mattr": (list, False)},
}


def _check(table: dict[str, Any], section: str, path: Path) -> None:
    schema = _SCHEMA[section]
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
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise HwsimError(f"{path}: key '{prefix}{key}' must be {typ.__name__}, got {value!r}")
        if typ is int and value < 0:
            raise HwsimError(f"{path}: key '{prefix}{key}' must be >= 0, got {value}")


def load_target_file(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HwsimError(f"{path}: invalid TOML ({e})") from None
    _check(data, "", path)
    _check(data["tvm"], "tvm", path)
    if data["kind"] not in KINDS:
        raise HwsimError(f"{path}: key 'kind' must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    t = data["tvm"]
    tvm = TvmTarget(kind=t["kind"], mcpu=t["mcpu"], num_cores=t["num_cores"], mtriple=t.get("mtriple", ""),
                    mattr=tuple(t.get("mattr", ())))
    return Target(name=data["name"], kind=data["kind"], description=data["description"], tvm=tvm, source=path)


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
