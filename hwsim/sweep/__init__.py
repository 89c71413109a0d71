"""`hwsim sweep SPEC.toml`: a design-space sweep over accelerator configurations x adapter formats and ranks
(hwsim/sweep/spec.py), each point one compile-and-simulate job on a local process pool or a Dask cluster
(run.py), every finished point committed to points.sqlite (store.py), so a killed sweep resumes where it
stopped; then a report of the trade-offs (report.py).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError
from hwsim.sweep.spec import load_spec, points
from hwsim.sweep.store import Store

STORE = "points.sqlite"


@dataclass(frozen=True)
class SweepResult:
    root: Path
    run: dict[str, Any]
    rows: list[dict[str, Any]]
    report: Path


def run_sweep(spec_path: Path, *, out: Path | None = None, jobs: int | None = None, scheduler: str | None = None,
              force: bool = False, progress: Callable[[str], None] | None = None) -> SweepResult:
    from hwsim.artifacts import source_hash
    from hwsim.matrix import Variant, prepare_variants
    from hwsim.sweep.report import write_sweep_report
    from hwsim.sweep.run import execute
    from models.variants import load_adapter_for, load_base

    step = progress or (lambda _m: None)
    spec = load_spec(spec_path)
    root = Path(out) if out else Path("build") / "sweeps" / spec.path.stem
    ours = {STORE, f"{STORE}-wal", f"{STORE}-shm", "variants", "plots", "results.json", "report.md", "report.html"}
    if root.exists() and {p.name for p in root.iterdir()} - ours and not force:
        raise HwsimError(f"{root} already exists and is not a hwsim sweep: pass --force to use it anyway, or choose "
                         "another --out")
    lora = load_adapter_for(load_base(spec.model), spec.adapter)
    if lora is None:
        raise HwsimError(f"{spec.path}: {spec.model} has no adapter to apply the formats to (set sweep.adapter)")
    trained = int(lora.config["r"])
    root.mkdir(parents=True, exist_ok=True)
    variants = {(fmt, rank): Variant(f"{fmt}@r{rank}" if rank and rank != trained else fmt, fmt, "fp32",
                                     rank if rank and rank != trained else None)
                for fmt in spec.formats for rank in spec.ranks}
    info = prepare_variants(spec.model, spec.adapter, list(variants.values()), root, spec.tokens, 0, spec.seed,
                            rtol=1e-3, retry_failed=force, progress=step, phases=("prefill",))
    failed = [i for i in info.values() if i.get("status") == "failed"]
    if failed:
        raise HwsimError(f"{spec.path}: variant {failed[0]['id']} was not exported ({failed[0]['error']}); "
                         "drop it from the sweep, or rerun with --force to retry it")
    by_variant = {key: info[v.id] for key, v in variants.items()}
    todo_points = points(spec, {key: i["key"] for key, i in by_variant.items()}, source_hash())
    store = Store(root / STORE)
    try:
        done = store.done()
        todo = [p for p in todo_points if p.key not in done]
        prefill = {key: i["exports"]["prefill"] for key, i in by_variant.items()}
        tasks = [{"point": p.as_dict(), "onnx": prefill[(p.format, p.rank)]["path"], "target_text": spec.target_text,
                  "target_name": spec.target_file.stem, "shapes": prefill[(p.format, p.rank)]["shapes"],
                  "verify": spec.verify, "seed": spec.seed} for p in todo]
        step(f"{len(todo)} of {len(todo_points)} points to run ({len(todo_points) - len(todo)} already done)")
        run = execute(tasks, store, jobs=jobs or os.cpu_count() or 1, scheduler=scheduler,
                      progress=lambda d, n: step(f"simulated {d}/{n} points"))
        run["skipped"] = len(todo_points) - len(todo)
        rows = store.rows({p.key for p in todo_points})
    finally:
        store.close()
    step("writing the report")
    return SweepResult(root, run, rows, write_sweep_report(root, spec, rows, run))
