"""The comparison report of a build directory: results.json (schema: results.schema.json), report.html
(self-contained) and report.md with plots/, all regenerated from the manifests by `hwsim report`."""

import json
import os
from pathlib import Path

from hwsim.report.collect import collect
from hwsim.report.plots import PLOTS
from hwsim.report.render import sections, to_html, to_markdown

SCHEMA = Path(__file__).with_name("results.schema.json")


def validate(results: dict) -> None:
    """Raise jsonschema.ValidationError unless `results` follows results.schema.json."""
    import jsonschema

    jsonschema.validate(results, json.loads(SCHEMA.read_text()))


def _write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_report(root: Path, out: Path | None = None) -> Path:
    """Collect the build directory `root`, validate, plot and render into `out` (default: `root`); returns the
    path of report.html."""
    results = collect(Path(root))
    validate(results)
    images = {name: png for name, make in PLOTS.items() if (png := make(results)) is not None}
    title = f"hwsim report: {results['model']['name']}"
    secs = sections(results)
    out = Path(out or root)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        _write(out / "plots" / f"{name}.png", png)
    _write(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    _write(out / "report.md", to_markdown(secs, title, images))
    _write(out / "report.html", to_html(secs, title, images))
    return out / "report.html"
