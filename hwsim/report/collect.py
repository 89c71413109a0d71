"""results.json from a matrix directory: matrix.json (variants, jobs, failures, the branch overhead) and each
job's manifest.json. Nothing is rebuilt; every number becomes a figure with its unit and its provenance.

Provenance: `measured` (timed on a named device, or computed by running the model), `simulated` (the
accelerator model), `estimated` (a roofline from the target file, or bytes over a link's bandwidth),
`counted` (exact, from the packed arrays or the IR). Energy figures cite the target's energy table the
build used (its name and file, as the manifest recorded them).
"""

import json
import math
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError
from hwsim.ir import DType
from hwsim.report.scale import scaled_results
from targets import cite_energy, known_targets, load_target

RESULTS_SCHEMA = "hwsim.results/1"


def _accuracy(m: dict[str, Any], variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quality figures of a variant record (or of its plain conversion, `m` = its "conversion" part)."""
    v = variant or m
    held_in = "torch, held-in inputs, vs fp32 base + fp32 adapter"
    corpus = v.get("perplexity_corpus") or {}
    text = (f"{corpus.get('corpus')}, Python {corpus.get('python')} (sha256 {corpus.get('sha256')}), "
            f"{corpus.get('windows')} x {corpus.get('length')} tokens, {corpus.get('tokens')}")
    out = {k: figure(m.get(k), "relative", "measured", held_in)
           for k in ("adapter_rel_error", "base_rel_error", "output_rel_error", "cosine_similarity")
           if m.get(k) is not None}
    if m.get("task_accuracy") is not None:
        out["task_accuracy"] = figure(m["task_accuracy"], "fraction", "measured", "torch, models/tasks.py")
    for k, how in (("perplexity_torch", "torch"), ("perplexity_onnxruntime", "onnxruntime on the prefill ONNX")):
        if m.get(k) is not None:
            out[k] = figure(m[k], "perplexity", "measured", f"{how}; {text}")
    return out


def figure(value: float | None, unit: str, provenance: str, source: str) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": float(value), "unit": unit, "provenance": provenance, "source": source}


def latency_figures(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Every latency a manifest holds, each with where it came from."""
    lat, out = m["latency"], []
    if "tvm" in lat:
        out.append(figure(lat["tvm"]["median_ms"], "ms", "measured", lat["tvm"]["device"]))
    if "simulated" in lat:
        sim = lat["simulated"]
        out.append(figure(sim["median_ms"], "ms", "simulated", sim["model"]))
    if "roofline" in lat:
        out.append(figure(lat["roofline"]["median_ms"], "ms", "estimated", lat["roofline"]["model"]))
    return out


def primary(figures: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The figure to plot: measured, else simulated, else estimated."""
    rank = {"measured": 0, "simulated": 1, "estimated": 2}
    return min(figures, key=lambda f: rank[f["provenance"]], default=None)


def _tokens(shape: dict[str, list[int]]) -> int:
    """Tokens of a phase: the sequence dim of its first input ([batch, seq] ids, [batch, seq, hidden] states)."""
    dims = next(iter(shape.values()), [1])
    return dims[1] if len(dims) > 1 else 1


def energy_source(e: dict[str, Any]) -> str:
    """Which energy table a manifest's energy came from; manifests from before tables were recorded say so."""
    t = e.get("table")
    return cite_energy(t) if t else f"{e.get('source') or e['model']}; energy table not recorded"


def _energy(m: dict[str, Any], tokens: int) -> dict[str, Any] | None:
    e = m.get("energy")
    if not e:
        return None
    per = 1e-6 / tokens  # pJ -> uJ per token
    src = energy_source(e)
    return {"total": figure((e["compute_pj"] + e["memory_pj"]) * per, "uJ/token", e["provenance"], src),
            "compute": figure(e["compute_pj"] * per, "uJ/token", e["provenance"], src),
            "memory": figure(e["memory_pj"] * per, "uJ/token", e["provenance"], src)}


def _layers(m: dict[str, Any]) -> dict[str, Any]:
    """The per-layer breakdown of one build: simulated layers, or the roofline's most expensive nodes."""
    if "simulation" in m:
        sim = m["simulation"]
        rows = sorted(sim["layers"], key=lambda r: -r["cycles"])[:12]
        return {"provenance": "simulated", "source": sim["model"], "unit": "ms",
                "rows": [{"name": r["name"], "op": r["op"], "unit_ran_on": r["unit"],
                          "value": r["cycles"] / (sim["clock_mhz"] * 1e3)} for r in rows]}
    est = m["latency"].get("roofline")
    if not est:
        return {"provenance": "estimated", "source": "none", "unit": "ms", "rows": []}
    return {"provenance": "estimated", "source": est["model"], "unit": "ms",
            "rows": [{"name": r["node"], "op": r["op"], "unit_ran_on": r["bound"] + "-bound", "value": r["ms"]}
                     for r in est["top_nodes"]]}


def dram_bandwidth(name: str) -> tuple[float, str] | None:
    """A built-in target's peak DRAM bandwidth in bytes/s and the keys it comes from (matrix.json does not
    record it); None for a target file given by path, which a report cannot reload."""
    if name not in known_targets():
        return None
    t = load_target(name)
    if t.accel is not None:
        d = t.accel.dram
        return (d.bandwidth_bytes_per_cycle * t.accel.clock_mhz * 1e6,
                f"targets/{name}.toml dram.bandwidth_bytes_per_cycle x clock_mhz")
    kind = "gpu" if t.gpu is not None else "cpu"
    return getattr(t, kind).dram_bandwidth_gbs * 1e9, f"targets/{name}.toml {kind}.dram_bandwidth_gbs"


def bandwidth_efficiency(m: dict[str, Any], figs: list[dict[str, Any]],
                         bandwidth: tuple[float, str] | None) -> list[dict[str, Any]]:
    """Each measured or simulated latency against the weight-streaming bound: the weights and the graph's
    inputs (a decode step's KV cache among them) read once at peak DRAM bandwidth, over the latency. Roofline
    estimates are left out: they are that model's own bound, not a run to compare with it."""
    if bandwidth is None:
        return []
    moved = m["memory"]["weight_bytes"] + sum(math.prod(i["shape"]) * DType(i["dtype"]).itemsize
                                              for i in m["inputs"])
    per_s, where = bandwidth
    bound_ms = moved / per_s * 1e3
    return [figure(bound_ms / f["value"], "ratio", f["provenance"],
                   f"{moved:,} B (weights + inputs) at {per_s / 1e9:.4g} GB/s ({where}) = {bound_ms:.4g} ms, "
                   f"over the {f['provenance']} latency ({f['source']})")
            for f in figs if f["provenance"] in ("measured", "simulated") and f["value"] > 0]


def collect(root: Path) -> dict[str, Any]:
    try:
        matrix = json.loads((root / "matrix.json").read_text())
    except (OSError, ValueError) as e:
        raise HwsimError(f"{root}: not a hwsim build directory (matrix.json: {e})") from None
    variants = {v["id"]: v for v in matrix["variants"]}
    # adapter bytes are compared with fp16 LoRA at the trained rank on the same base format
    lora_fp16 = {v.get("base_format"): v for v in matrix["variants"] if v.get("adapter_format") == "lora-fp16"
                 and v.get("matched") == "rank" and v.get("status") != "failed"}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    bandwidths = {t["name"]: dram_bandwidth(t["name"]) for t in matrix["targets"]}
    tables: dict[str, dict[str, Any]] = {}  # target -> the energy table its builds used
    layer_candidates = []
    for job in matrix["jobs"]:
        key = (job["variant"], job["target"])
        cell = cells.setdefault(key, {"variant": job["variant"], "target": job["target"], "status": "ok",
                                      "errors": [], "latency": {}, "predicted_over_measured": {},
                                      "energy_per_token": {}, "peak_activation_bytes": {},
                                      "bandwidth_efficiency": {}})
        if job["status"] != "ok":
            cell["errors"].append({"phase": job["phase"], "error": job["error"]})
            continue
        m = json.loads((root / job["dir"] / "manifest.json").read_text())
        figs = latency_figures(m)
        cell["latency"][job["phase"]] = figs
        ratio = m["latency"].get("measured_over_estimated")
        if ratio:
            cell["predicted_over_measured"][job["phase"]] = figure(1 / ratio, "ratio", "estimated",
                                                                   "roofline / measured")
        if job["phase"] == "decode":
            cell["bandwidth_efficiency"]["decode"] = bandwidth_efficiency(m, figs, bandwidths[job["target"]])
        tokens = _tokens(matrix["phases"][job["phase"]])
        cell["energy_per_token"][job["phase"]] = _energy(m, tokens)
        if (m.get("energy") or {}).get("table"):
            tables.setdefault(job["target"], m["energy"]["table"])
        cell["peak_activation_bytes"][job["phase"]] = figure(m["memory"]["peak_activation_bytes"], "bytes",
                                                             "counted", "IR liveness")
        cell.setdefault("weight_bytes_in_ir", figure(m["memory"]["weight_bytes"], "bytes", "counted", "IR"))
        best = primary(figs)
        if best is not None:
            layer_candidates.append((best["value"], job, m))
    for cell in cells.values():
        phases = len(matrix["phases"])
        cell["status"] = "ok" if not cell["errors"] else "failed" if len(cell["errors"]) == phases else "partial"
    targets = {t["name"]: t for t in matrix["targets"]}
    adapters = []
    for v in matrix["variants"]:
        row: dict[str, Any] = {"variant": v["id"], "adapter_format": v.get("adapter_format"),
                               "base_format": v.get("base_format"), "rank": v.get("rank"), "matched": v["matched"]}
        if v.get("status") == "failed":  # not exported (its check failed): only the reason is known
            row["error"] = v["error"]
        elif v["matched"] != "as-is":
            src = "models/formats (bits of the packed arrays)"
            row["adapter_bytes"] = figure(v["adapter_bits"] // 8, "bytes", "counted", src)
            row["base_weight_bytes"] = figure(v["base_bits"] // 8, "bytes", "counted", src)
            ref = lora_fp16.get(v.get("base_format"))
            if ref and v["adapter_bits"]:
                row["adapter_ratio_vs_lora_fp16"] = figure(ref["adapter_bits"] / v["adapter_bits"], "ratio",
                                                           "counted", f"vs {ref['id']}")
            ts = v.get("training_state")
            if ts:
                row["training_state_bytes"] = figure(ts["total"], "bytes", "measured",
                                                     f"one adapter-training step of the whole model, base frozen, "
                                                     f"{ts['tokens']} tokens: {ts.get('counted', '')} "
                                                     "(models/sign_training.py)")
            row["accuracy"] = _accuracy(v)
            if v.get("conversion"):  # trained in sign form: the plain conversion's figures, labelled
                row["accuracy"] |= {f"conversion_{k}": f for k, f in _accuracy(v["conversion"], v).items()}
                row["training"] = {k: x for k, x in v["training"].items() if k != "loss_trace"}
        adapters.append(row)
    for cell in cells.values():  # hot swap: the variant's adapter over each link of the target
        v = variants[cell["variant"]]
        nbytes = v.get("adapter_bits", 0) // 8
        cell["hot_swap"] = [{"link": name.removesuffix("_mb_per_s"), "bytes": figure(nbytes, "bytes", "counted",
                                                                                      "adapter bytes"),
                             "seconds": figure(nbytes / (mbps * 1e6), "s", "estimated",
                                               f"targets/{cell['target']}.toml links.{name}")}
                            for name, mbps in targets[cell["target"]]["links"].items()] if nbytes else []
    layers = None
    if layer_candidates:
        _, job, m = max(layer_candidates, key=lambda c: c[0])
        layers = {"variant": job["variant"], "target": job["target"], "phase": job["phase"], **_layers(m)}
    overhead = matrix.get("branch_overhead")
    if overhead:
        src = f"hwsim.overhead, {overhead['tokens']}x{overhead['d']}, r={overhead['r']}, {overhead['device']}"
        overhead = {"tokens": overhead["tokens"], "d": overhead["d"], "r": overhead["r"],
                    **{k: figure(overhead[k], "ms" if k.endswith("_ms") else "ratio", "measured", src)
                       for k in ("base_ms", "lordba_branch_ms", "lora_fp16_branch_ms", "lordba_overhead",
                                 "lora_fp16_overhead")}}
    return {"schema": RESULTS_SCHEMA, "model": matrix["model"], "phases": matrix["phases"],
            "targets": [{**t, "energy_table": tables.get(t["name"])} for t in matrix["targets"]],
            "matched_bytes_budget": figure(matrix.get("matched_bytes_budget"), "bytes", "counted",
                                           "LoRDBA at the trained rank"),
            "variants": [{k: v.get(k) for k in ("id", "adapter_format", "base_format", "rank", "matched")}
                         for v in matrix["variants"]],
            "cells": list(cells.values()), "adapters": adapters, "branch_overhead": overhead, "layers": layers,
            "scaled": scaled_results(matrix["model"], list(cells.values()), adapters)}
