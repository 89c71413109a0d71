"""PEFT LoRA adapters on disk: read adapter_config.json + adapter_model.safetensors, convert, write back.

A converted adapter directory holds the compact form only: hwsim_adapter.safetensors (packed
signs/trits, fp16 scales) and hwsim_adapter.json (the source adapter's PEFT config under "peft_config",
per-module packed bytes and reconstruction errors, and the bytes of every file written, so the file-size
ratio against the source adapter is on record). The dense fp32 PEFT twin (adapter_config.json +
adapter_model.safetensors computing exactly what the format computes, the correctness oracle) is
opt-in: it is larger than the fp16 adapter the compact form replaces.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from hwsim.artifacts import atomic_dir, write_json
from hwsim.errors import HwsimError
from models.formats.adapter import ADAPTER_FORMATS, fit_adapter, lora_equivalent
from models.formats.base import WeightFormat
from models.formats.lora import peft_scaling

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
HWSIM_CONFIG, HWSIM_WEIGHTS = "hwsim_adapter.json", "hwsim_adapter.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(\.default)?\.weight$")


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: a key matches a module name by suffix or full regex."""
    for key, value in patterns.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return default


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter: its config and, per adapted module, A [r, in] and B [out, r] in fp32."""

    config: dict[str, Any]
    modules: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def rank(self, module: str) -> int:
        return int(_pattern_value(self.config.get("rank_pattern") or {}, module, self.config["r"]))

    def scaling(self, module: str) -> float:
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", 8))
        return peft_scaling(float(alpha), self.rank(module), bool(self.config.get("use_rslora", False)))

    def truncated(self, rank: int) -> "LoraAdapter":
        """The best rank-`rank` approximation of every module's dW (truncated SVD of scaling * B A), as a
        LoRA adapter with scaling 1 (lora_alpha = r): what a smaller adapter of the same task holds, for
        comparisons at matched adapter bytes."""
        config = {**self.config, "r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": {},
                  "alpha_pattern": {}}
        out = LoraAdapter(config)
        for module, (a, b) in self.modules.items():
            u, s, vt = np.linalg.svd(self.scaling(module) * b.astype(np.float64) @ a.astype(np.float64),
                                     full_matrices=False)
            root = np.sqrt(s[:rank])
            out.modules[module] = ((root[:, None] * vt[:rank]).astype(np.float32),
                                   (u[:, :rank] * root).astype(np.float32))
        return out


def read_adapter(path: Path) -> LoraAdapter:
    """Read and validate a PEFT LoRA adapter directory; every problem is one HwsimError line."""
    path = Path(path)
    if not path.is_dir():
        raise HwsimError(f"{path}: not an adapter directory")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            hint = " (legacy adapter_model.bin is not supported)" if name == WEIGHTS else ""
            if (path / HWSIM_CONFIG).is_file():
                hint = " (a compact hwsim adapter: convert with --peft-twin for a PEFT-loadable copy)"
            raise HwsimError(f"{path}: missing {name}{hint}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except ValueError as e:
        raise HwsimError(f"{path / CONFIG}: invalid JSON ({e})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise HwsimError(f"{path / CONFIG}: peft_type is {config.get('peft_type')}, only LORA adapters are supported")
    if config.get("use_dora"):
        raise HwsimError(f"{path / CONFIG}: DoRA adapters are not supported")
    if not isinstance(config.get("r"), int) or config["r"] <= 0:
        raise HwsimError(f"{path / CONFIG}: key 'r' must be a positive integer")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise HwsimError(f"{path / WEIGHTS}: cannot read ({e})") from None
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            continue  # modules_to_save and biases are not part of the low-rank branch
        parts.setdefault(m["module"], {})[m["which"]] = value.astype(np.float32)
    if not parts:
        raise HwsimError(f"{path / WEIGHTS}: no lora_A/lora_B weights found")
    adapter = LoraAdapter(config)
    for module, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise HwsimError(f"{path / WEIGHTS}: module '{module}' has lora_{next(iter(ab))} but no "
                             f"lora_{'B' if 'A' in ab else 'A'}")
        a, b = ab["A"], ab["B"]
        r = adapter.rank(module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise HwsimError(f"{path / WEIGHTS}: rank mismatch in module '{module}': lora_A {list(a.shape)}, "
                             f"lora_B {list(b.shape)}, adapter_config r={r}")
        adapter.modules[module] = (a, b)
    return adapter


def _write_peft(d: Path, adapter: LoraAdapter, dtype: str) -> None:
    write_json(d / CONFIG, adapter.config)
    tensors = {}
    for module, (a, b) in adapter.modules.items():
        tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a.astype(dtype))
        tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b.astype(dtype))
    save_file(tensors, str(d / WEIGHTS))


@dataclass
class ModuleResult:
    name: str
    shape: tuple[int, int]
    rank: int
    fitted: WeightFormat
    lora_fp16_bits: int

    def row(self) -> dict[str, Any]:
        f = self.fitted
        return {"module": self.name, "shape": list(self.shape), "rank": self.rank, "bits": f.bits(),
                "formula_bits": f.formula_bits(), "lora_fp16_bits": self.lora_fp16_bits,
                "rel_error": f.report.rel_error, "details": f.report.details, "meta": f.meta()}


def convert_adapter(adapter: LoraAdapter, fmt: str, **opts: Any) -> list[ModuleResult]:
    """Fit every adapted module in `fmt`."""
    if fmt not in ADAPTER_FORMATS:
        raise HwsimError(f"unknown adapter format '{fmt}' (known: {', '.join(ADAPTER_FORMATS)})")
    results = []
    for module, (a, b) in adapter.modules.items():
        fitted = fit_adapter(fmt, a, b, adapter.scaling(module), **opts)
        results.append(ModuleResult(module, fitted.shape, a.shape[0], fitted, 16 * a.shape[0] * sum(fitted.shape)))
    return results


def save_converted(path: Path, adapter: LoraAdapter, fmt: str, results: list[ModuleResult], *,
                   force: bool = False, peft_twin: bool = False, source_bytes: int | None = None,
                   training: dict[str, Any] | None = None) -> None:
    """The converted adapter: compact hwsim form + per-module report (+ the dense PEFT twin if asked).

    `source_bytes` is the source adapter_model.safetensors' size, recorded next to the bytes written;
    `training` says how the modules were trained in sign form, when they were.
    """
    packed: dict[str, np.ndarray] = {}
    for res in results:
        packed |= {f"{res.name}.{k}": np.ascontiguousarray(v) for k, v in res.fitted.pack().items()}
    total = sum(r.fitted.bits() for r in results)
    base = sum(r.lora_fp16_bits for r in results)
    report = {"format": fmt, "peft_config": adapter.config, "adapter_bytes": total // 8,
              "lora_fp16_bytes": base // 8, "ratio_vs_lora_fp16": base / total if total else None,
              "source_bytes": source_bytes, "peft_twin": peft_twin, "modules": [r.row() for r in results],
              **({"training": training} if training else {})}
    with atomic_dir(Path(path), force=force) as tmp:
        if peft_twin:
            _write_peft(tmp, peft_twin_of(adapter, results), "float32")
        save_file(packed, str(tmp / HWSIM_WEIGHTS))
        _write_report(tmp, report)


def peft_twin_of(adapter: LoraAdapter, results: list[ModuleResult]) -> LoraAdapter:
    """The plain PEFT LoRA (source config, fp32) whose dW is exactly each fitted module's dW."""
    twin = LoraAdapter(dict(adapter.config))
    for res in results:
        a, b, s = lora_equivalent(res.fitted)
        twin.modules[res.name] = (a, b * (s / adapter.scaling(res.name)))  # PEFT applies its own scaling
    return twin


def _write_report(d: Path, report: dict[str, Any]) -> None:
    """Write hwsim_adapter.json with the on-disk bytes of every file in `d`, its own included.

    Its own size depends on the digits it records, so rewrite until the recorded size is the size. Only
    integers change between writes and the size never shrinks as they grow, so this settles in 2-3 writes.
    """
    files = {p.name: p.stat().st_size for p in d.iterdir() if p.name != HWSIM_CONFIG}
    size = 0
    while True:
        files[HWSIM_CONFIG] = size
        report["files"] = dict(sorted(files.items()))
        report["written_bytes"] = sum(files.values())
        write_json(d / HWSIM_CONFIG, report)
        if (size := (d / HWSIM_CONFIG).stat().st_size) == files[HWSIM_CONFIG]:
            return
