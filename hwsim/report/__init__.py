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


def write_report(root: Path) -> Path:
    """Collect, validate, plot and render; returns the path of report.html."""
    root = Path(root)
    results = collect(root)
    validate(results)
    images = {name: png for name, make in PLOTS.items() if (png := make(results)) is not None}
    title = f"hwsim report: {results['model']['name']}"
    secs = sections(results)
    (root / "plots").mkdir(exist_ok=True)
    for name, png in images.items():
        _write(root / "plots" / f"{name}.png", png)
    _write(root / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    _write(root / "report.md", to_markdown(secs, title, images))
    _write(root / "report.html", to_html(secs, title, images))
    return root / "report.html"
