"""The sweep's report, in the style of `hwsim report`: a table of every point, the Pareto-optimal ones per
format (latency, energy and area proxy, all minimised), plots of the trade-offs, and the failures."""

import json
from pathlib import Path
from typing import Any

from hwsim.report import publish
from hwsim.report.plots import plt, png
from hwsim.report.render import Section, Table

OBJECTIVES = ("latency_ms", "energy_uj", "area_units")


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on every objective (and strictly on one)."""
    def dominates(a: dict, b: dict) -> bool:
        ra, rb = a["result"], b["result"]
        return all(ra[k] <= rb[k] for k in OBJECTIVES) and any(ra[k] < rb[k] for k in OBJECTIVES)

    return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def _scatter(rows: list[dict[str, Any]], x: str, y: str, fronts: dict[str, list[dict]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, fmt in enumerate(sorted({r["format"] for r in rows})):
        mine = [r for r in rows if r["format"] == fmt]
        color = plt.get_cmap("tab10")(i)
        ax.scatter([r["result"][x] for r in mine], [r["result"][y] for r in mine], s=14, color=color, label=fmt,
                   alpha=0.7)
        front = sorted(fronts[fmt], key=lambda r: r["result"][x])
        ax.plot([r["result"][x] for r in front], [r["result"][y] for r in front], color=color, lw=1)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(f"{y} vs {x} (simulated; lines join each format's Pareto-optimal points)", fontsize=9)
    ax.legend(fontsize=7)
    return png(fig)


def _latency(row: dict[str, Any]) -> float:
    return row["result"]["latency_ms"]


def write_sweep_report(root: Path, spec: Any, rows: list[dict[str, Any]], run: dict[str, Any]) -> Path:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    fronts = {fmt: pareto([r for r in ok if r["format"] == fmt]) for fmt in sorted({r["format"] for r in ok})}
    axes = list(spec.axes)
    results = {"schema": "hwsim.sweep/1", "spec": str(spec.path), "model": spec.model, "target": str(spec.target_file),
               "axes": spec.axes, "run": run, "points": rows,
               "pareto": {fmt: [r["key"] for r in front] for fmt, front in fronts.items()}}
    images = {}
    if ok:
        images = {"latency_energy": _scatter(ok, "latency_ms", "energy_uj", fronts),
                  "latency_area": _scatter(ok, "area_units", "latency_ms", fronts),
                  "energy_area": _scatter(ok, "area_units", "energy_uj", fronts)}

    def cells(r: dict) -> list[str]:
        res = r["result"]
        return [r["format"], str(r["rank"] or "trained"), *(f"{r['config'][a]:g}" for a in axes),
                f"{res['latency_ms']:.4g}", f"{res['energy_uj']:.4g}", f"{res['area_units']:.4g}",
                ", ".join(f"{k} {100 * v:.1f}%" for k, v in res["utilisation"].items())]

    header = ["format", "rank", *axes, "latency ms [S]", "energy uJ [S]", "area units", "utilisation"]
    secs = [Section("summary", "Summary",
                    f"{len(rows)} points of {spec.path.name} ({spec.model} on {spec.target_file.name}); {len(ok)} ok, "
                    f"{len(failed)} failed. This run computed {run['computed']} ({run['executor']}, "
                    f"{run['points_per_second']:.3g} points/s, {run['steady_points_per_second']:.3g} after the workers "
                    f"started) and skipped {run['skipped']} already in the store. "
                    "Latency and energy are simulated (hwsim's accelerator model, one prefill); the area is the "
                    "target file's relative proxy.",
                    [Table(["axis", "values"], [[a, ", ".join(f"{v:g}" for v in vs)] for a, vs in spec.axes.items()])],
                    list(images)),
            Section("pareto", "Pareto-optimal points per format", "Minimising latency, energy and area together.",
                    [Table(header, [cells(r) for fmt in fronts for r in sorted(fronts[fmt], key=_latency)])]),
            Section("points", "Every point", "", [Table(header, [cells(r) for r in sorted(
                ok, key=lambda r: (r["format"], r["result"]["latency_ms"]))])]),
            Section("failures", "Failures", "Every point that failed, and why." if failed else "No point failed.",
                    [Table(["format", "rank", "configuration", "error"],
                           [[r["format"], str(r["rank"] or "trained"), json.dumps(r["config"]), r["error"] or ""]
                            for r in failed])] if failed else [])]
    return publish(root, f"hwsim sweep: {spec.path.stem}", secs, images, results)
