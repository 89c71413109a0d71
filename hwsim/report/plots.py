"""The report's plots as PNG bytes (matplotlib, Agg): latency and energy per target, footprint, latency vs
bytes (Pareto), and the per-layer breakdown of the slowest build. Bars are hatched by provenance."""

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hwsim.report.collect import primary

HATCH = {"measured": "", "simulated": "//", "estimated": ".."}
DPI = 110


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _cell(results: dict, variant: str, target: str) -> dict | None:
    return next((c for c in results["cells"] if c["variant"] == variant and c["target"] == target), None)


def _grouped(ax: Any, results: dict, value: Any, title: str, unit: str) -> None:
    """Bars grouped by target, one per variant; `value(cell)` -> (number, provenance) or None."""
    variants = [v["id"] for v in results["variants"]]
    targets = [t["name"] for t in results["targets"]]
    width = 0.8 / max(len(variants), 1)
    colors = plt.get_cmap("tab10")
    for i, v in enumerate(variants):
        labelled = False
        for j, t in enumerate(targets):
            cell = _cell(results, v, t)
            got = value(cell) if cell else None
            if got is None:
                continue
            number, provenance = got
            ax.bar(j + (i - (len(variants) - 1) / 2) * width, number, width, color=colors(i % 10),
                   hatch=HATCH.get(provenance, ""), edgecolor="black", linewidth=0.4,
                   label=None if labelled else v)
            labelled = True
    ax.set_xticks(range(len(targets)), targets, rotation=15)
    _scale(ax)
    ax.set_ylabel(unit)
    ax.set_title(title)


def _scale(ax: Any) -> None:
    """Log when the bars span more than 20x (targets differ by orders of magnitude), linear from 0 otherwise."""
    heights = [p.get_height() for p in ax.patches if p.get_height() > 0]
    if heights and max(heights) / min(heights) > 20:
        ax.set_yscale("log")
        ax.set_ylim(min(heights) / 2, max(heights) * 2)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def latency_plot(results: dict) -> bytes:
    phases = list(results["phases"])
    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4.2), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        def value(cell: dict, phase: str = phase) -> tuple[float, str] | None:
            best = primary(cell["latency"].get(phase, []))
            return (best["value"], best["provenance"]) if best else None
        _grouped(ax, results, value, f"latency, {phase} (plain: measured, //: simulated, ..: estimated)", "ms")
    _legend(axes[0][0])
    return png(fig)


def energy_plot(results: dict) -> bytes:
    phases = list(results["phases"])
    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4.2), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        def value(cell: dict, phase: str = phase) -> tuple[float, str] | None:
            e = cell["energy_per_token"].get(phase)
            return (e["total"]["value"], e["total"]["provenance"]) if e else None
        _grouped(ax, results, value, f"energy per token, {phase}", "uJ / token")
    _legend(axes[0][0])
    return png(fig)


def footprint_plot(results: dict) -> bytes:
    rows = [a for a in results["adapters"] if "adapter_bytes" in a]
    fig, ax = plt.subplots(figsize=(9, 4))
    names = [a["variant"] for a in rows]
    base = [a["base_weight_bytes"]["value"] for a in rows]
    adapter = [a["adapter_bytes"]["value"] for a in rows]
    train = [a["training_state_bytes"]["value"] if a.get("training_state_bytes") else 0 for a in rows]
    x = range(len(rows))
    ax.bar([i - 0.27 for i in x], base, 0.27, label="base weights", color="#9ecae1", edgecolor="black", lw=0.4)
    ax.bar(list(x), adapter, 0.27, label="adapter (shipped)", color="#fd8d3c", edgecolor="black", lw=0.4)
    ax.bar([i + 0.27 for i in x], train, 0.27, label="adapter training state", color="#74c476", edgecolor="black",
           lw=0.4)
    ax.set_xticks(list(x), names, rotation=20)
    _scale(ax)
    ax.set_ylabel("bytes (counted; training state measured)")
    ax.set_title("memory footprint")
    ax.legend(fontsize=8)
    return png(fig)


def pareto_plot(results: dict) -> bytes:
    """Adapter bytes vs decode (or the only phase's) latency, per target, with each target's Pareto front."""
    phase = "decode" if "decode" in results["phases"] else next(iter(results["phases"]))
    size = {a["variant"]: a["adapter_bytes"]["value"] for a in results["adapters"] if "adapter_bytes" in a}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for t in results["targets"]:
        pts = []
        for c in results["cells"]:
            best = primary(c["latency"].get(phase, [])) if c["target"] == t["name"] else None
            if best and c["variant"] in size:
                pts.append((size[c["variant"]], best["value"], c["variant"]))
        if not pts:
            continue
        line = ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=t["name"], s=22)
        front, best_y = [], float("inf")
        for p in sorted(pts):
            if p[1] < best_y:
                front.append(p)
                best_y = p[1]
        ax.plot([p[0] for p in front], [p[1] for p in front], color=line.get_facecolor()[0], lw=1)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("adapter bytes")
    ax.set_ylabel(f"{phase} latency, ms")
    ax.set_title("latency vs adapter bytes (lines: Pareto front per target)")
    _legend(ax)
    return png(fig)


def layers_plot(results: dict) -> bytes | None:
    layers = results.get("layers")
    if not layers or not layers["rows"]:
        return None
    rows = layers["rows"][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ax.barh([f"{r['name']} ({r['op']}, {r['unit_ran_on']})" for r in rows], [r["value"] for r in rows],
            color="#6baed6", edgecolor="black", lw=0.4, hatch=HATCH.get(layers["provenance"], ""))
    ax.set_xlabel(f"ms ({layers['provenance']})")
    ax.set_title(f"slowest build: {layers['variant']} on {layers['target']} ({layers['phase']})", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return png(fig)


PLOTS = {"latency": latency_plot, "energy": energy_plot, "footprint": footprint_plot, "pareto": pareto_plot,
         "layers": layers_plot}
