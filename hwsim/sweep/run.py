"""Running sweep points: one point is a compile-and-simulate job (lower the variant to the configured
accelerator, simulate it, and, with `verify`, run it functionally against the reference interpreter), on a
local process pool or a Dask distributed cluster, each finished point committed to the results store as
it arrives. A failing point is a row with its error; it does not stop the sweep.
"""

import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.sweep.spec import set_leaf
from hwsim.sweep.store import Store


@lru_cache(maxsize=16)
def _graph(onnx: str, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> Any:
    """The variant's IR graph, imported once per worker process."""
    from hwsim.api import import_graph, resolve_model

    return import_graph(resolve_model(onnx), dict(shapes))


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """One point (see the module docstring); returns its result row, an error instead of raising."""
    from codegen.accel.lower import lower
    from hwsim import interp
    from hwsim.accel import functional
    from hwsim.accel.stats import summarise
    from hwsim.accel.timing import simulate
    from hwsim.errors import describe
    from hwsim.reference import compare, random_inputs
    from targets import target_from_data

    t0 = time.perf_counter()
    point = task["point"]
    try:
        data = tomllib.loads(task["target_text"])
        for key, value in point["config"].items():
            set_leaf(data, key, value)
        data["name"] = f"{data['name']}-{point['key'][:8]}"
        spec = target_from_data(data, Path(f"{task['target_name']}[{point['key'][:8]}]"))
        graph = _graph(task["onnx"], tuple(sorted((k, tuple(v)) for k, v in task["shapes"].items())))
        program = lower(graph, spec)
        timeline = simulate(program.instrs, spec.accel, program.host_cycles)
        sim = summarise(program, timeline)
        result: dict[str, Any] = {
            "cycles": sim["cycles"], "latency_ms": sim["latency_ms"], "energy_uj": sim["energy_uj"],
            "energy_compute_uj": sim["energy_pj"]["compute"] * 1e-6,
            "energy_memory_uj": sim["energy_pj"]["memory"] * 1e-6,
            "area_units": spec.accel.area_units(), "utilisation": sim["utilisation"],
            "dram_bytes": sim["bytes"].get("dram_read", 0) + sim["bytes"].get("dram_write", 0),
            "instructions": sim["instructions"], "provenance": "simulated", "model": sim["model"]}
        if task["verify"]:
            feeds = dict(zip([v.name for v in graph.inputs], random_inputs(graph, task["seed"]), strict=True))
            got = functional.run(program, timeline, feeds)
            checks = [compare(f"output {i}", g, r, 1e-3) for i, (g, r) in
                      enumerate(zip(got, interp.run(graph, feeds), strict=True))]
            result["verified_max_rel_err"] = max(c.max_rel_err for c in checks)
            if not all(c.ok for c in checks):
                raise ValueError("functional run differs from the interpreter: "
                                 + "; ".join(c.describe() for c in checks if not c.ok))
        return {"status": "ok", "result": result, "error": None, "seconds": time.perf_counter() - t0,
                "worker": os.getpid()}
    except Exception as e:  # recorded with the point: a bad configuration must not stop the sweep
        return {"status": "failed", "result": None, "error": describe(e), "seconds": time.perf_counter() - t0,
                "worker": os.getpid()}


def one_thread_each() -> None:
    """Worker initialiser: one BLAS thread per worker process, so N workers use N cores, not N x cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _local(tasks: list[dict[str, Any]], jobs: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=one_thread_each) as pool:
        futures = {pool.submit(run_point, t): t for t in tasks}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _dask(tasks: list[dict[str, Any]], scheduler: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    from distributed import Client
    from distributed import as_completed as dask_completed

    from hwsim.errors import HwsimError

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise HwsimError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    try:
        futures = {client.submit(run_point, t, pure=False, key=f"hwsim-point-{t['point']['key']}"): t for t in tasks}
        for fut in dask_completed(futures):
            yield futures[fut], fut.result()
    finally:
        client.close()


def execute(tasks: list[dict[str, Any]], store: Store, *, jobs: int, scheduler: str | None,
            progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run `tasks` (points not in the store yet) and commit each result as it arrives."""
    run_id = uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    first = last = t0
    done = 0
    stream = _dask(tasks, scheduler) if scheduler else _local(tasks, jobs)
    for task, row in stream:
        store.put(task["point"], row, run_id)
        done += 1
        last = time.perf_counter()
        first = last if done == 1 else first
        progress(done, len(tasks))
    seconds = last - t0
    return {"run": run_id, "computed": done, "seconds": seconds, "startup_seconds": first - t0,
            "points_per_second": done / seconds if seconds and done else float(np.nan),
            # after the first point: worker start-up (imports, TVM) excluded
            "steady_points_per_second": (done - 1) / (last - first) if done > 1 and last > first else float(np.nan),
            "executor": f"dask at {scheduler}" if scheduler else f"local pool, {jobs} process(es)"}
