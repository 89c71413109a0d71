"""The calibrated host latency model against measurement: every host build under the given `hwsim compile`
output directories, predicted (estimated, hwsim/hostmodel.py) beside measured (on this host), with the
roofline beside both. Prints a table and writes JSON.

    python bench/host_model.py build/tiny-llama build/minilm build/smollm2-135m --json bench/results/host_model.json

Each build's manifest carries the prediction, made when the build was timed (`latency.calibrated`), with
its per-class and per-kernel split; this script only collects them.
"""

import argparse
import json
import sys
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="hwsim compile output directories")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    found = [r for root in args.roots for r in rows(root)]
    if not found:
        print(f"no timed host build with a calibrated prediction under {', '.join(map(str, args.roots))}",
              file=sys.stderr)
        return 2
    table = Table(title="calibrated host model: predicted (estimated) vs measured")
    for col in ("build", "regime", "measured ms", "predicted ms", "pred/meas", "roofline ms"):
        table.add_column(col, justify="left" if col in ("build", "regime") else "right", no_wrap=col == "build")
    for r in found:
        ok = BAND[0] <= r["predicted_over_measured"] <= BAND[1]
        table.add_row(r["build"], r["regime"], f"{r['measured_ms']:.4g}", f"{r['predicted_ms']:.4g}",
                      f"[{'green' if ok else 'red'}]{r['predicted_over_measured']:.2f}", f"{r['roofline_ms']:.4g}")
    Console().print(table)
    ratios = [r["predicted_over_measured"] for r in found]
    inside = sum(BAND[0] <= x <= BAND[1] for x in ratios)
    print(f"{inside} of {len(found)} builds within {BAND[0]}-{BAND[1]}; ratios {min(ratios):.2f}-{max(ratios):.2f}; "
          f"measured on {found[0]['device']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"band": BAND, "builds": found}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
