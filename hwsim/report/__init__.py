"""The comparison report of a build directory: results.json (schema: results.schema.json), report.html
(self-contained) and report.md with plots/, all regenerated from the manifests by `hwsim report`."""

import json
from pathlib import Path

from hwsim.artifacts import write_atomic
from hwsim.report.collect import collect
from hwsim.report.plots import PLOTS
from hwsim.report.render import Section, sections, to_html, to_markdown

SCHEMA = Path(__file__).with_name("results.schema.json")


def validate(results: dict) -> None:
    """Raise jsonschema.ValidationError unless `results` follows results.schema.json."""
    import jsonschema

    jsonschema.validate(results, json.loads(SCHEMA.read_text()))


def publish(out: Path, title: str, secs: list[Section], images: dict[str, bytes], results: dict) -> Path:
    """plots/*.png, results.json, report.md and report.html in `out`, each written atomically."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        write_atomic(out / "plots" / f"{name}.png", png)
    write_atomic(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_atomic(out / "report.md", to_markdown(secs, title, images))
    write_atomic(out / "report.html", to_html(secs, title, images))
    return out / "report.html"


def write_report(root: Path, out: Path | None = None) -> Path:
    """Collect the build directory `root`, validate, plot and render into `out` (default: `root`); returns the
    path of report.html."""
    results = collect(Path(root))
    validate(results)
    images = {name: png for name, make in PLOTS.items() if (png := make(results)) is not None}
    return publish(Path(out or root), f"hwsim report: {results['model']['name']}", sections(results), images, results)
