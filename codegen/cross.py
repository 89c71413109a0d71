"""Cross-compiled aarch64 artifacts: the library, a small runner, and running both under qemu.

The PyPI wheel of TVM for x86 cannot load aarch64 code, so an ARM artifact is a directory a board can
use as it is: `model.so` (the Relax VM library, linked by aarch64-linux-gnu-g++), `hwsim-runner`
(codegen/runner/hwsim_runner.cc) and the aarch64 `libtvm_runtime.so` / `libtvm_ffi.so` it loads from
beside itself. Those two come from the aarch64 wheels of the exact TVM versions installed here
(codegen/toolchain.py fetches them once). On this machine the same directory runs under
qemu-aarch64, which is how every ARM build is verified numerically; qemu's times are not latencies.
"""

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen.toolchain import (
    CXX,
    QEMU,
    RUNNER,
    RUNTIME_LIBS,
    SYSROOT,
    Progress,
    require_tools,
    runner_binary,
    runtime_dir,
)
from hwsim.errors import HwsimError


def export(executable, path: Path) -> None:
    """Link a Relax VM executable built for aarch64 into a shared library for the board."""
    from tvm.support import cc

    require_tools()
    executable.export_library(str(path), fcompile=cc.cross_compiler(CXX))


def bundle(out_dir: Path, progress: Progress | None = None) -> list[Path]:
    """Put the runner and the runtime libraries beside model.so: the directory runs on a board as is."""
    files = [runner_binary(progress), *(runtime_dir(progress) / Path(p).name for p in RUNTIME_LIBS.values())]
    copied = []
    for f in files:
        shutil.copy2(f, out_dir / f.name)
        copied.append(out_dir / f.name)
    return copied


@dataclass(frozen=True)
class QemuRun:
    outputs: list[np.ndarray]
    times_ms: list[float]
    command: str


def run_qemu(artifact_dir: Path, inputs: list[np.ndarray], *, threads: int, repeat: int = 0) -> QemuRun:
    """Run the artifact's runner under qemu-aarch64 on `inputs`; return its outputs and per-run times."""
    require_tools()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, x in enumerate(inputs):
            paths.append(Path(tmp) / f"in{i}.npy")
            np.save(paths[-1], x)
        cmd = [QEMU, "-L", str(SYSROOT), str(artifact_dir / RUNNER), str(artifact_dir / "model.so"), tmp,
               "--repeat", str(repeat), *map(str, paths)]
        env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise HwsimError(f"{RUNNER} failed under qemu (exit {r.returncode}): "
                             f"{(r.stderr.strip() or r.stdout.strip())[-500:]}")
        report = json.loads(r.stdout.strip().splitlines()[-1])
        outputs = [np.load(Path(tmp) / f"out{i}.npy") for i in range(report["outputs"])]
    shown = [QEMU, "-L", str(SYSROOT), f"./{RUNNER}", "model.so", "OUT_DIR", "--repeat", str(repeat), "in0.npy", "..."]
    return QemuRun(outputs, report["times_ms"], f"TVM_NUM_THREADS={threads} " + " ".join(shown))
