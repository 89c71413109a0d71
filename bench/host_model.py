"""The calibrated host latency model against measurement: every host build under the given `hwsim compile`
output directories, predicted (estimated, hwsim/hostmodel.py) beside measured (on this host), with the
roofline beside both. Prints a table and writes JSON.

    python bench/host_model.py build/tiny-llama build/minilm build/smollm2-135m --json bench/results/host_model.json

Each build's manifest carries the prediction, made when the build was timed (`latency.calibrated`), with
its per-class and per-kernel split; this script collects them. `hwsim compile` times every host build in
several fresh processes, spread over all its builds, and takes the quietest round (hwsim/hosttiming.py: a
process that has just compiled, or loaded many builds, runs some builds 2-3x slower, and fresh processes of
one build differ too). On a shared machine a burst of load from elsewhere can still slow everything for
minutes, so `--retime R` times every build again with the same harness (the build alone, without
onnxruntime): R rounds of `--round-s` seconds in each of `--passes` fresh processes per build, the quietest
round's median (`retimed_ms`) with the spread of the rounds beside it; the compile's figure stays in the
table and JSON. `--repredict` predicts again from each build's recorded census with this code's model and
calibration.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

BAND = (0.75, 1.25)


def rows(root: Path) -> list[dict]:
    out = []
    for manifest in sorted(root.glob("**/host/**/manifest.json")):
        m = json.loads(manifest.read_text())
        lat = m.get("latency", {})
        cal = lat.get("calibrated", {})
        if "tvm" not in lat or "median_ms" not in cal:
            continue
        out.append({"build": str(manifest.parent.relative_to(root.parent)), "device": lat["tvm"]["device"],
                    "measured_ms": lat["tvm"]["median_ms"], "predicted_ms": cal["median_ms"],
                    "predicted_over_measured": cal["predicted_over_measured"], "regime": cal["regime"],
                    "roofline_ms": lat.get("roofline", {}).get("median_ms"), "classes": cal["classes"]})
    return out


def retime(found: list[dict], root_of: dict[str, Path], rounds: int, round_s: float, passes: int) -> None:
    """Time every build again as `hwsim compile` does (hwsim/hosttiming.py: a fresh process per build and pass,
    passes in alternating orders), the build alone; adds retimed_ms (the quietest round's median), rounds_ms
    and predicted_over_retimed to each row."""
    from rich.progress import Progress

    from codegen.host import runtime_threads
    from hwsim import hosttiming
    from hwsim.api import import_graph, resolve_model
    from hwsim.reference import random_inputs

    jobs = []
    for r in found:
        m = json.loads((root_of[r["build"]] / "manifest.json").read_text())
        shapes = {k: tuple(v) for k, v in (m.get("options", {}).get("shapes") or {}).items()}
        graph = import_graph(resolve_model(m["model"]["path"]), shapes or None)
        jobs.append(hosttiming.Job(root_of[r["build"]] / "model.so", None, [v.name for v in graph.inputs],
                                   random_inputs(graph, m.get("options", {}).get("seed", 0)), runtime_threads()))
    with Progress(transient=True) as bar:
        task = bar.add_task("timing each build in a fresh process", total=len(jobs) * passes)
        got = hosttiming.time_builds(jobs, runs=5 * rounds * passes, passes=passes, rounds=rounds, round_s=round_s,
                                     profile=False, progress=lambda _msg: bar.advance(task))
    for r, g in zip(found, got, strict=True):
        if g.error:
            raise g.error
        medians = [float(np.median(x)) for x in g.tvm]
        r["rounds_ms"] = [round(x, 4) for x in medians]
        r["retimed_ms"] = min(medians)
        r["predicted_over_retimed"] = r["predicted_ms"] / r["retimed_ms"]


def repredict(found: list[dict], root_of: dict[str, Path]) -> None:
    """Predict every build again from its recorded census with this code's classes and calibration (builds
    compiled before a change of the model carry the older model's prediction)."""
    from codegen import calibrate, census
    from codegen.host import runtime_threads
    from hwsim import hostmodel

    cal = calibrate.cached(runtime_threads())
    for r in found:
        m = json.loads((root_of[r["build"]] / "manifest.json").read_text())
        kernels = []
        for k in m["census"]["kernels"]:
            cls = census.classify(k["name"])
            kernels.append(k | {"class": cls, "table_entries": census.table_entries(k["name"], cls)})
        r["predicted_ms"] = hostmodel.predict({**m["census"], "kernels": kernels}, cal)["median_ms"]
        r["predicted_over_measured"] = r["predicted_ms"] / r["measured_ms"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="hwsim compile output directories")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--retime", type=int, default=0, metavar="R",
                    help="time every build again, R rounds in each of --passes fresh processes, and compare "
                         "with the quietest round")
    ap.add_argument("--round-s", type=float, default=0.1, help="seconds per build per round (--retime)")
    ap.add_argument("--passes", type=int, default=6,
                    help="fresh processes per build (--retime), in alternating orders; R rounds in each")
    ap.add_argument("--repredict", action="store_true",
                    help="predict again with this code's model and calibration (from each build's census)")
    args = ap.parse_args()
    if args.retime and args.passes < 1:
        ap.error("--passes must be at least 1")
    per_root = [(root, rows(root)) for root in args.roots]  # each manifest read once
    found = [r for _, found_here in per_root for r in found_here]
    root_of = {r["build"]: root.parent / r["build"] for root, found_here in per_root for r in found_here}
    if not found:
        print(f"no timed host build with a calibrated prediction under {', '.join(map(str, args.roots))}",
              file=sys.stderr)
        return 2
    if args.repredict:
        repredict(found, root_of)
    if args.retime:
        retime(found, root_of, args.retime, args.round_s, args.passes)
    key = "predicted_over_retimed" if args.retime else "predicted_over_measured"
    table = Table(title="calibrated host model: predicted (estimated) vs measured")
    cols = ["build", "regime", "measured ms (compile)", "predicted ms", "pred/meas", "roofline ms"]
    if args.retime:
        cols += ["retimed ms (quietest round)", "rounds max/min", "pred/retimed"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("build", "regime") else "right", no_wrap=col == "build")
    for r in found:
        cells = [r["build"], r["regime"], f"{r['measured_ms']:.4g}", f"{r['predicted_ms']:.4g}",
                 f"{r['predicted_over_measured']:.2f}", f"{r['roofline_ms']:.4g}"]
        if args.retime:
            cells += [f"{r['retimed_ms']:.4g}", f"{max(r['rounds_ms']) / r['retimed_ms']:.2f}",
                      f"{r['predicted_over_retimed']:.2f}"]
        ok = BAND[0] <= r[key] <= BAND[1]
        cells[-1] = f"[{'green' if ok else 'red'}]{cells[-1]}"
        table.add_row(*cells)
    Console(width=200).print(table)
    ratios = [r[key] for r in found]
    inside = sum(BAND[0] <= x <= BAND[1] for x in ratios)
    print(f"{inside} of {len(found)} builds within {BAND[0]}-{BAND[1]} ({key}); ratios {min(ratios):.2f}-"
          f"{max(ratios):.2f}; measured on {found[0]['device']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"band": BAND, "builds": found}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
