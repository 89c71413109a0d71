"""A sweep spec (TOML): the model, adapter formats and ranks, the accelerator file the points vary, and a
grid or a seeded random sample over that file's numeric keys (dotted: "arrays.sign.rows").

    [sweep]
    model = "tiny-llama"               # a built-in model or a Hugging Face directory (with adapter = "...")
    formats = ["lora-fp16", "lordba", "ternary", "tritplane"]
    ranks = [16]                       # adapter ranks; below the trained rank: its truncated SVD [default: trained]
    target = "sacc-32x32"              # an accelerator target name or .toml file
    tokens = 16                        # prefill tokens
    verify = true                      # run each point functionally against the interpreter

    [grid]                             # every combination; or [random] with samples = N, seed = S
    "arrays.sign.rows" = [16, 32]
    "buffers.weight.kib" = [64, 128]

A point is (model, format, rank, configuration); its key is a content hash of everything that determines
its result.
"""

import hashlib
import itertools
import json
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError
from targets import TARGET_DIR, load_target

SWEEP_KEYS = {"model": str, "adapter": str, "formats": list, "ranks": list, "target": str, "tokens": int,
              "verify": bool, "seed": int}
RANDOM_KEYS = {"samples", "seed"}


@dataclass(frozen=True)
class Spec:
    path: Path
    model: str
    adapter: str | None
    formats: tuple[str, ...]
    ranks: tuple[int | None, ...]  # None: the trained rank
    target_file: Path
    target_text: str
    tokens: int
    verify: bool
    seed: int
    configs: tuple[tuple[tuple[str, float], ...], ...]  # each a sorted tuple of (dotted key, value)
    axes: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    key: str
    model: str
    format: str
    rank: int | None
    config: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.model, "format": self.format, "rank": self.rank,
                "config": dict(self.config)}


def _leaf(table: dict[str, Any], dotted: str) -> Any:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_leaf(table: dict[str, Any], dotted: str, value: float) -> None:
    *path, last = dotted.split(".")
    node = table
    for part in path:
        node = node[part]
    node[last] = type(node[last])(value) if isinstance(node[last], int | float) else value


def _axes(path: Path, section: str, table: dict[str, Any], target: dict[str, Any]) -> dict[str, list[float]]:
    axes = {}
    for key, values in table.items():
        if section == "random" and key in RANDOM_KEYS:
            continue
        leaf = _leaf(target, key)
        if isinstance(leaf, bool) or not isinstance(leaf, int | float):
            raise HwsimError(f"{path}: key '{section}.{key}' is not a numeric key of the target file")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise HwsimError(f"{path}: key '{section}.{key}' must be a non-empty list of numbers")
        axes[key] = values
    return axes


BUILTIN = TARGET_DIR / "sweeps"


def load_spec(path: Path | str) -> Spec:
    """Parse and validate a sweep spec (a .toml file, or the name of one in targets/sweeps/); every problem
    is one HwsimError naming the file and the key."""
    path = Path(path)
    if path.suffix != ".toml":
        if not (BUILTIN / f"{path}.toml").is_file():
            known = ", ".join(sorted(p.stem for p in BUILTIN.glob("*.toml")))
            raise HwsimError(f"unknown sweep '{path}': not a .toml file, and not a built-in sweep (known: {known})")
        path = BUILTIN / f"{path}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise HwsimError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise HwsimError(f"{path}: invalid TOML ({e})") from None
    for section in data:
        if section not in ("sweep", "grid", "random"):
            raise HwsimError(f"{path}: unknown section '{section}' (known: sweep, grid, random)")
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise HwsimError(f"{path}: missing section 'sweep'")
    for key, value in sweep.items():
        if key not in SWEEP_KEYS:
            raise HwsimError(f"{path}: unknown key 'sweep.{key}' (known: {', '.join(SWEEP_KEYS)})")
        if not isinstance(value, SWEEP_KEYS[key]) or (SWEEP_KEYS[key] is int and isinstance(value, bool)):
            raise HwsimError(f"{path}: key 'sweep.{key}' must be {SWEEP_KEYS[key].__name__}, got {value!r}")
    for key in ("model", "formats", "target"):
        if key not in sweep:
            raise HwsimError(f"{path}: missing key 'sweep.{key}'")
    if ("grid" in data) == ("random" in data):
        raise HwsimError(f"{path}: needs exactly one of the sections 'grid' and 'random'")
    target_name = sweep["target"]
    target_file = Path(target_name) if target_name.endswith(".toml") else \
        Path(load_target(target_name).source)
    spec_target = load_target(str(target_file))
    if spec_target.kind != "accel":
        raise HwsimError(f"{path}: key 'sweep.target' must be an accelerator target, {target_name} is a "
                         f"{spec_target.kind}")
    text = target_file.read_text()
    target = tomllib.loads(text)
    from models.formats.adapter import ADAPTER_FORMATS

    for fmt in sweep["formats"]:
        if fmt not in ADAPTER_FORMATS:
            raise HwsimError(f"{path}: key 'sweep.formats' has '{fmt}' (known: {', '.join(ADAPTER_FORMATS)})")
    ranks = sweep.get("ranks", [None])
    if not all(r is None or (isinstance(r, int) and r > 0) for r in ranks):
        raise HwsimError(f"{path}: key 'sweep.ranks' must list positive integers")
    section = "grid" if "grid" in data else "random"
    axes = _axes(path, section, data[section], target)
    combos = [tuple(sorted(zip(axes, values, strict=True))) for values in itertools.product(*axes.values())]
    if section == "random":
        samples = data["random"].get("samples")
        if not isinstance(samples, int) or samples <= 0:
            raise HwsimError(f"{path}: key 'random.samples' must be a positive integer")
        rng = random.Random(data["random"].get("seed", 0))
        combos = rng.sample(combos, min(samples, len(combos)))
    return Spec(path, sweep["model"], sweep.get("adapter"), tuple(sweep["formats"]), tuple(ranks), target_file,
                text, sweep.get("tokens", 16), sweep.get("verify", True), sweep.get("seed", 0), tuple(combos), axes)


def points(spec: Spec, variant_hashes: dict[tuple[str, int | None], str], code: str) -> list[Point]:
    """Every (format, rank, configuration), keyed by a hash of what determines its result."""
    out = []
    for fmt, rank, config in itertools.product(spec.formats, spec.ranks, spec.configs):
        blob = json.dumps({"model": spec.model, "variant": variant_hashes[(fmt, rank)], "target": spec.target_text,
                           "config": config, "tokens": spec.tokens, "verify": spec.verify, "seed": spec.seed,
                           "code": code}, sort_keys=True)
        out.append(Point(hashlib.sha256(blob.encode()).hexdigest()[:20], spec.model, fmt, rank, config))
    return out
