"""The report as sections of tables and plots, rendered once to self-contained HTML (plots embedded as
PNG data URIs, no scripts) and once to Markdown (plots as files beside it)."""

import base64
import html
from dataclasses import dataclass, field
from typing import Any

PROV = {"measured": "M", "simulated": "S", "estimated": "E", "counted": "C"}


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # plot names (see plots.PLOTS)


def fmt(f: dict[str, Any] | None, digits: int = 3) -> str:
    """A figure as "value unit [M/S/E/C]"."""
    if f is None:
        return "-"
    v, unit = f["value"], f["unit"]
    if unit == "bytes":
        text = f"{v:,.0f} B"
    elif unit == "ratio":
        text = f"{v:.3g}x"
    elif unit in ("relative", "fraction"):
        text = f"{v:.4f}"
    elif unit == "perplexity":
        text = f"{v:.2f}"
    else:
        text = f"{v:.{digits}g} {unit}"
    return f"{text} [{PROV[f['provenance']]}]"


def pct(f: dict[str, Any]) -> str:
    """A ratio figure as a percentage with its provenance tag."""
    return f"{100 * f['value']:.1f}% [{PROV[f['provenance']]}]"


def sections(r: dict[str, Any]) -> list[Section]:
    variants = [v["id"] for v in r["variants"]]
    targets = [t["name"] for t in r["targets"]]
    phases = list(r["phases"])
    cells = {(c["variant"], c["target"]): c for c in r["cells"]}
    adapters = {a["variant"]: a for a in r["adapters"]}
    failed = [(c["variant"], c["target"], e["phase"], e["error"]) for c in r["cells"] for e in c["errors"]]
    out = []

    shapes = "; ".join(f"{p}: " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s.items())
                       for p, s in r["phases"].items())
    summary = (f"Model <b>{html.escape(r['model']['name'])}</b> ({html.escape(r['model']['source'])}); "
               f"phases {html.escape(shapes)}; {len(variants)} variants x {len(targets)} targets. "
               "Every figure is tagged: [M] measured, [S] simulated, [E] estimated, [C] counted.")
    if failed:
        summary += f" <b>{len(failed)} build(s) failed</b>: see Failures."
    out.append(Section("summary", "Summary", summary, [Table(
        ["target", "kind", "description"], [[t["name"], t["kind"], t["description"]] for t in r["targets"]])]))

    lat = Table(["variant"] + [f"{t} {p}" for t in targets for p in phases], [])
    ratio = Table(["variant"] + [f"{t} {p}" for t in targets for p in phases], [])
    for v in variants:
        row, rrow = [v], [v]
        for t in targets:
            for p in phases:
                c = cells.get((v, t))
                figs = c["latency"].get(p, []) if c else []
                row.append(" / ".join(fmt(f) for f in figs) if figs else ("failed" if c and c["errors"] else "-"))
                rrow.append(fmt(c["predicted_over_measured"].get(p)) if c else "-")
        lat.rows.append(row)
        ratio.rows.append(rrow)
    tables = [lat]
    text = ("Per variant and target, each phase: every latency the build has, measured first. The roofline "
            "estimate over the measurement, where both exist, follows.")
    if any(x != "-" for row in ratio.rows for x in row[1:]):
        tables.append(ratio)
    if "decode" in r["phases"]:
        def efficiency(v: str, t: str) -> str:
            figs = cells[(v, t)]["bandwidth_efficiency"].get("decode", []) if (v, t) in cells else []
            return " / ".join(pct(f) for f in figs) or "-"
        tables.append(Table(["variant"] + [f"{t} decode bandwidth efficiency" for t in targets],
                            [[v] + [efficiency(v, t) for t in targets] for v in variants]))
        text += (" Bandwidth efficiency: the decode step's weight-streaming bound (weight and input bytes at the "
                 "target's peak DRAM bandwidth) over each measured or simulated latency; 100% would stream at peak. "
                 "Roofline estimates get none: they are that bound's own model.")
    out.append(Section("latency", "Latency", text, tables, ["latency", "pareto"]))

    mem = Table(["variant", "rank", "matched", "base weights", "adapter", "vs fp16 LoRA", "training state"], [])
    for v in r["variants"]:
        a = adapters[v["id"]]
        mem.rows.append([v["id"], str(v.get("rank") or "-"), v["matched"], fmt(a.get("base_weight_bytes")),
                         fmt(a.get("adapter_bytes")), fmt(a.get("adapter_ratio_vs_lora_fp16")),
                         fmt(a.get("training_state_bytes"))])
    peak = Table(["variant"] + [f"{t} {p}" for t in targets for p in phases],
                 [[v] + [fmt(cells[(v, t)]["peak_activation_bytes"].get(p)) if (v, t) in cells else "-"
                         for t in targets for p in phases] for v in variants])
    budget = r.get("matched_bytes_budget")
    matched = (f" At matched adapter bytes each format takes the largest rank within {fmt(budget)}."
               if budget and budget.get("value") is not None else "")
    out.append(Section("memory", "Memory", "Base weight and adapter bytes from the packed arrays; vs fp16 LoRA: its "
                       f"adapter bytes at the trained rank on the same base over the variant's.{matched} Training "
                       "state: parameters, gradients, Adam moments, the tensors autograd saves and the frozen base as "
                       "stored, measured on one step of on-device adapter training of the whole model (the fp LoRA "
                       "baseline trains fp32 factors, as PEFT keeps them; the other formats their sign-form latents "
                       "and scales). Second table: peak activation bytes (IR liveness).", [mem, peak], ["footprint"]))

    energy = Table(["variant"] + [f"{t} {p}" for t in targets for p in phases], [])
    for v in variants:
        row = [v]
        for t in targets:
            for p in phases:
                e = cells[(v, t)]["energy_per_token"].get(p) if (v, t) in cells else None
                row.append(f"{fmt(e['total'])} (compute {e['compute']['value']:.3g}, memory "
                           f"{e['memory']['value']:.3g})" if e else "-")
        energy.rows.append(row)
    used = Table(["target", "energy table", "file", "process node", "memory"],
                 [[t["name"], e["name"], e["file"], f"{e['process_nm']} nm", e["memory"]]
                  if (e := t.get("energy_table")) else [t["name"], "table not recorded", "-", "-", "-"]
                  for t in r["targets"]])
    out.append(Section("energy", "Energy per token", "Simulated (accelerators) or estimated (CPUs, GPUs) from the "
                       "target's own energy table, at its process node and memory, split into compute and memory. "
                       "The second table names each target's table; every figure's source is in its target file.",
                       [energy, used], ["energy"]))

    if r.get("scaled"):
        out.append(_scaled_section(r["scaled"], variants, targets, phases))

    out.append(_accuracy_section(variants, adapters))

    swap = Table(["variant", "target", "bytes to ship", "time per link"], [])
    for v in variants:
        for t in targets:
            c = cells.get((v, t))
            if c and c["hot_swap"]:
                swap.rows.append([v, t, fmt(c["hot_swap"][0]["bytes"]),
                                  ", ".join(f"{h['link']}: {fmt(h['seconds'])}" for h in c["hot_swap"])])
    out.append(Section("hotswap", "Adapter hot swap", "Bytes to ship a new adapter and the time to load it over "
                       "each link the target file declares.", [swap]))

    bo = r.get("branch_overhead")
    if bo:
        out.append(Section("overhead", "Adapter branch overhead", f"Prefill of an unmerged r={bo['r']} branch over its "
                           f"base layer ({bo['tokens']} x {bo['d']}), built by hwsim for the host, interleaved "
                           "rounds (hwsim.overhead, as bench/kernels.py).", [Table(
                               ["base layer", "LoRDBA branch", "fp16 LoRA branch", "LoRDBA overhead",
                                "fp16 LoRA overhead"],
                               [[fmt(bo[k]) for k in ("base_ms", "lordba_branch_ms", "lora_fp16_branch_ms")]
                                + [f"{100 * bo[k]['value']:.1f}% [M]" for k in ("lordba_overhead",
                                                                              "lora_fp16_overhead")]])]))
    layers = r.get("layers")
    if layers:
        out.append(Section("layers", "Per-layer breakdown of the slowest build",
                           f"{layers['variant']} on {layers['target']} ({layers['phase']}), {layers['provenance']} "
                           f"({html.escape(layers['source'])}).", [Table(
                               ["layer", "op", "ran on", "ms"],
                               [[x["name"], x["op"], x["unit_ran_on"], f"{x['value']:.4g}"] for x in layers["rows"]])],
                           ["layers"]))
    out.append(Section("failures", "Failures", "Every build that failed, and why." if failed else
                       "No build failed.", [Table(["variant", "target", "phase", "error"],
                                                  [list(f) for f in failed])] if failed else []))
    return out


def _scaled_section(sc: dict[str, Any], variants: list[str], targets: list[str], phases: list[str]) -> Section:
    """Per-block figures x the layer count (hwsim/report/scale.py), every one marked as scaled."""
    n = sc["layers"]
    cells = {(c["variant"], c["target"], c["phase"]): c for c in sc["cells"]}

    def cell(v: str, t: str, p: str) -> str:
        c = cells.get((v, t, p))
        if not c or not c["latency"]:
            return "-"
        e = c["energy_per_token"]
        return fmt(c["latency"]) + (f"; {fmt(e)}" if e else "")

    perf = Table(["variant"] + [f"{t} {p}" for t in targets for p in phases],
                 [[v] + [cell(v, t, p) for t in targets for p in phases] for v in variants])
    size = Table(["variant", f"base weights x{n}", f"adapter x{n}"],
                 [[w["variant"], fmt(w["base_weight_bytes"]), fmt(w["adapter_bytes"])] for w in sc["variants"]])
    return Section("scaled", f"Scaled to {n} layers (x{n}, not measured as a whole)",
                   f"{html.escape(sc['of'])}. Every figure here is the one-block figure above multiplied by {n}: "
                   "latency (the primary figure of each build: measured, else simulated, else estimated) and energy "
                   "per token in the first table, base weight and adapter bytes in the second.", [perf, size])


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f0f0f0}h2{border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:28px}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#555;font-size:13px}"""


def to_html(secs: list[Section], title: str, images: dict[str, bytes]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<p class='note'>" + " | ".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in secs)
                 + "</p>")
    for s in secs:
        parts.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2><p class='note'>{s.text}</p>")
        for t in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows]
            parts.append("</table>")
        for name in s.plots:
            if name in images:
                data = base64.b64encode(images[name]).decode()
                parts.append(f"<img class='plot' id='plot-{name}' alt='{name}' src='data:image/png;base64,{data}'>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_markdown(secs: list[Section], title: str, images: dict[str, bytes]) -> str:
    import re

    lines = [f"# {title}", ""]
    for s in secs:
        lines += [f"## {s.title}", "", re.sub(r"</?b>", "**", s.text), ""]
        for t in s.tables:
            lines.append("| " + " | ".join(t.header) + " |")
            lines.append("|" + "---|" * len(t.header))
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in t.rows]
            lines.append("")
        lines += [f"![{name}](plots/{name}.png)" for name in s.plots if name in images]
        lines.append("")
    return "\n".join(lines)


_ACC = ("adapter_rel_error", "base_rel_error", "output_rel_error", "cosine_similarity", "task_accuracy",
        "perplexity_torch", "perplexity_onnxruntime")


def _accuracy_section(variants: list[str], adapters: dict[str, Any]) -> Section:
    """Quality per variant; a variant trained in sign form is followed by its plain conversion, labelled."""
    acc = Table(["variant", "adapter rec. error", "base rec. error", "output rel. error", "cosine", "task accuracy",
                 "perplexity (torch)", "perplexity (onnxruntime)"], [])
    trained = []
    for v in variants:
        a = adapters[v].get("accuracy", {})
        t = adapters[v].get("training")
        acc.rows.append([f"{v} (trained, {t['steps']} steps)" if t else v] + [fmt(a.get(k)) for k in _ACC])
        if t:
            trained.append(v)
            acc.rows.append([f"{v} (plain conversion)"] + [fmt(a.get(f"conversion_{k}")) for k in _ACC])
    text = ("Reconstruction errors of the adapter's dW and the base weights, and the output error on held-in "
            "inputs, against the unquantised model (fp32 base + the trained adapter in fp32); the task accuracy on "
            "the adapter's task (models/tasks.py); perplexity of causal LMs on CPython's pydoc_data topics "
            "corpus (offline), from the torch model and from the exported ONNX in onnxruntime.")
    if trained:
        text += (" Sign-form training (models/sign_distill.py) distils the converted adapter from the fp LoRA's "
                 "outputs on the same base; the plain conversion's row is what the conversion alone gives (torch "
                 "only: it is not built). Training fits outputs, not dW, so its adapter rec. error may rise.")
    return Section("accuracy", "Accuracy cost", text, [acc])
