"""Timing host builds, each in fresh processes.

On a shared machine one timing window cannot tell a build's own speed from the state of the machine: a
process that has just compiled (or loaded many builds) ran some of them 2-3x slower than a fresh process,
and fresh processes of one build differ too (0.099, 0.102 and 0.130 ms for one tiny-llama decode, each steady
over its rounds). So every build is timed in `passes` fresh processes, spread over time (alternate passes in
opposite orders over all the builds being timed), `rounds` rounds in each, the artifact and onnxruntime
alternating round by round on the same inputs and threads; a build's figure is its quietest round's median,
and onnxruntime's alike. Every round's median is kept beside it.
"""

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import HwsimError

# The parallel kernels of one build ran 1.5-2.7x slower in some fresh processes than in others, each steady
# over its rounds, in phases of seconds to minutes (tiny-llama's ternary-base builds: slow in 1-3 of 4 passes;
# one minilm build slow in all 4 while the builds beside it had fast passes): six passes, spread over the
# builds. HWSIM_TIMING_PASSES overrides it (the test suite times in one pass).
PASSES = 6
ROUNDS = 3
ROUND_S = 0.1  # at least this long per round and contestant
METHOD = ("the quietest round's median: {rounds} rounds of at least {round_s} s in each of {passes} fresh "
          "processes (passes alternate their order over the builds), TVM and onnxruntime alternating round by "
          "round on the same inputs and threads")


@dataclass(frozen=True)
class Job:
    """One host build to time: its library, the ONNX file onnxruntime runs beside it (None: the build alone),
    and their inputs."""
    lib: Path
    onnx: Path | None
    names: list[str]
    inputs: list[np.ndarray]
    threads: int


@dataclass
class Rounds:
    """Per-run wall times in ms, round by round, of the artifact and of onnxruntime; the VM's per-call
    instrument from the first pass (codegen.host.profile_calls); or why a process failed."""
    tvm: list[list[float]]
    onnxruntime: list[list[float]]
    profile: dict[str, dict[str, float]]
    error: HwsimError | None = None


def passes() -> int:
    value = os.environ.get("HWSIM_TIMING_PASSES", str(PASSES))
    if not value.isdigit() or int(value) < 1:
        raise HwsimError(f"HWSIM_TIMING_PASSES={value!r}: expected a whole number of fresh processes, at least 1")
    return int(value)


def describe(passes: int, rounds: int = ROUNDS, round_s: float = ROUND_S) -> str:
    return METHOD.format(passes=passes, rounds=rounds, round_s=round_s)


def time_builds(jobs: list[Job], *, runs: int, passes: int, rounds: int = ROUNDS, round_s: float = ROUND_S,
                profile: bool = True, progress: Callable[[str], None] = lambda _msg: None) -> list[Rounds]:
    """Time every job in `passes` fresh processes each (see the module docstring); at least `runs` runs per
    contestant in all; with `profile`, the VM's per-call instrument in the first pass. Returns each job's
    rounds, in the jobs' order; a job whose process fails is not timed again and carries the error (the others
    go on)."""
    from codegen.host import runtime_threads  # the children inherit this process's environment

    if passes < 1 or rounds < 1:
        raise HwsimError(f"timing needs at least one pass and one round (got {passes} passes, {rounds} rounds)")
    for job in jobs:
        if runtime_threads() != job.threads:
            raise HwsimError(f"TVM's runtime runs {runtime_threads()} threads, onnxruntime would run {job.threads}: "
                             f"set TVM_NUM_THREADS={job.threads} so that both are timed on the same threads")
    per_round = max(1, -(-runs // (passes * rounds)))
    got = [Rounds([], [], {}) for _ in jobs]
    order = list(range(len(jobs)))
    schedule = [i for p in range(passes) for i in (order if p % 2 == 0 else order[::-1])]
    with tempfile.TemporaryDirectory(prefix="hwsim-timing-") as tmp:
        specs = []
        for i, job in enumerate(jobs):
            feeds = Path(tmp) / f"{i}.npz"
            np.savez(feeds, *job.inputs)
            # absolute paths: the child runs in the checkout's root, whatever directory this process is in
            specs.append(json.dumps({"lib": str(job.lib.resolve()), "onnx": job.onnx and str(job.onnx.resolve()),
                                     "names": job.names,
                                     "inputs": str(feeds), "threads": job.threads, "rounds": rounds,
                                     "runs": per_round, "round_s": round_s}))
        for n, i in enumerate(schedule):
            if got[i].error:
                continue
            progress(f"timing {n + 1}/{len(schedule)} in a fresh process: {jobs[i].lib.parent}")
            try:
                out = _run_child(specs[i], jobs[i].lib, profile=profile and not got[i].profile)
            except HwsimError as e:
                got[i].error = e
                continue
            got[i].tvm.extend(out["tvm"])
            got[i].onnxruntime.extend(out["onnxruntime"])
            got[i].profile = got[i].profile or out.get("profile", {})
    return got


def _run_child(spec: str, lib: Path, profile: bool) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "hwsim.hosttiming", spec, *(["--profile"] if profile else [])],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise HwsimError(f"{lib}: timing it in a fresh process failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(spec: dict[str, Any], profile: bool) -> dict[str, Any]:
    """(In a fresh process) alternate rounds of the artifact and onnxruntime, odd rounds starting with
    onnxruntime; then, with `profile`, the VM's per-call instrument."""
    from codegen import host
    from hwsim.reference import onnxruntime_session, time_onnxruntime

    with np.load(spec["inputs"]) as npz:
        inputs = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    vm = host.load(Path(spec["lib"]))
    session = spec["onnx"] and onnxruntime_session(Path(spec["onnx"]), spec["threads"])
    tvm_rounds: list[list[float]] = []
    ort_rounds: list[list[float]] = []

    def tvm_round() -> None:
        tvm_rounds.append(host.time_ms(vm, inputs, repeat=spec["runs"], min_total_s=spec["round_s"]))

    def ort_round() -> None:
        if session:
            ort_rounds.append(time_onnxruntime(session, spec["names"], inputs, spec["runs"], spec["round_s"]))

    for r in range(spec["rounds"]):
        for run in (tvm_round, ort_round) if r % 2 == 0 else (ort_round, tvm_round):
            run()
    out: dict[str, Any] = {"tvm": tvm_rounds, "onnxruntime": ort_rounds}
    if profile:
        out["profile"] = host.profile_calls(vm, inputs)
    return out


if __name__ == "__main__":
    # tvm_ffi imports torch when it can (2 of the 3 s a child takes to start); the child needs none of it
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        print(json.dumps(_child(json.loads(sys.argv[1]), "--profile" in sys.argv[2:])))
    except HwsimError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
