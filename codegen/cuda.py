"""Build a Relax module for an NVIDIA GPU: TVM's CUDA pipeline (dlight GPU schedules: matmul, GEMV,
reductions, fallback) generates CUDA C++, and the local nvcc compiles it to PTX and cubin for the
target's arch, which needs no GPU. The exported library embeds the CUDA source, which the TVM runtime
compiles again (NVRTC, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc) when it is loaded on a GPU.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.relax.backend.cuda import pipeline as cuda_generic
from tvm.s_tir import dlight as dl

from codegen import host
from codegen.schedules.guard import Guarded
from hwsim.artifacts import sha256_file
from hwsim.errors import HwsimError
from targets import Target

CUDA_BIN = Path("/usr/local/cuda/bin")  # ptxas lives here; /usr/local/bin/nvcc is a wrapper


def tvm_target(target: Target) -> tvm.target.Target:
    host = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    # 48 KiB: the static shared memory a block gets on every CUDA GPU without the opt-in attribute
    return tvm.target.Target({"kind": "cuda", "arch": target.tvm.arch, "host": host,
                              "max_shared_memory_per_block": 48 * 1024})


def require_nvcc() -> None:
    if CUDA_BIN.is_dir() and str(CUDA_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] += os.pathsep + str(CUDA_BIN)
    missing = [tool for tool in ("nvcc", "ptxas") if shutil.which(tool) is None]
    if missing:
        raise HwsimError(f"CUDA targets need {' and '.join(missing)} (the CUDA toolkit) on PATH to compile the "
                         "generated kernels; not found")


def gpu_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's CUDA pipeline with its dlight rules guarded (see Guarded)."""
    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]
    legalize = [p for p in cuda_generic.legalize_passes(target) if not isinstance(p, dl.ApplyDefaultSchedule)]
    return tvm.transform.Sequential([
        *cuda_generic.library_dispatch_passes(target), *legalize,
        dl.ApplyDefaultSchedule(*(Guarded(r) for r in rules), dl.gpu.Fallback()),
        *cuda_generic.dataflow_lower_passes(target), *cuda_generic.finalize_passes(target)])


def build(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    with target:
        return tvm.compile(mod, target=target, relax_pipeline=gpu_pipeline(target))


def cuda_source(ex: relax.VMExecutable) -> str:
    """The CUDA C++ of every device kernel in the executable."""
    sources = [m.inspect_source("cuda") for m in _device_modules(ex.mod)]
    if not sources:
        raise HwsimError("the CUDA build produced no device module")
    return "\n".join(sources)


def _device_modules(mod: tvm.runtime.Module) -> list[tvm.runtime.Module]:
    found = [mod] if mod.kind == "cuda" else []
    for m in mod.imports:
        found += _device_modules(m)
    return found


@dataclass
class GpuBuild:
    """A CUDA build: the exported library, its generated CUDA source, and what nvcc made of it."""

    library: Path
    source: str
    launches: int  # device kernel calls per run of `main`
    ptx: Path | None = None
    cubin: Path | None = None
    kernels: list[str] = field(default_factory=list)  # the .entry names in the PTX

    def compile_offline(self, arch: str, out: Path, target: tvm.target.Target) -> None:
        """nvcc the generated CUDA to PTX and cubin for `arch`: proves it compiles, with no GPU needed."""
        import contextlib
        import io

        from tvm.support import nvcc

        require_nvcc()
        (out / "model.cu").write_text(self.source)
        self.ptx, self.cubin = out / "model.ptx", out / "model.cubin"
        with target, contextlib.redirect_stdout(io.StringIO()):
            try:
                self.ptx.write_bytes(nvcc.compile_cuda(self.source, target_format="ptx", arch=arch, compiler="nvcc"))
            except RuntimeError as e:
                raise HwsimError(f"nvcc failed on the generated CUDA for {arch}: {str(e).strip()[:2000]}") from None
        # the PTX -> SASS step alone (what nvcc --cubin would run after regenerating the same PTX)
        done = subprocess.run(["ptxas", f"-arch={arch}", str(self.ptx), "-o", str(self.cubin)], capture_output=True,
                              text=True)
        if done.returncode:
            raise HwsimError(f"ptxas failed on the generated PTX for {arch}: {done.stderr.strip()[:300]}")
        self.kernels = sorted(re.findall(r"^\.visible \.entry\s+(\w+)\(", self.ptx.read_text(), flags=re.M))

    def artifacts(self) -> dict[str, dict[str, str]]:
        files = {"cuda_source": self.library.parent / "model.cu", "ptx": self.ptx, "cubin": self.cubin}
        return {key: {"file": f.name, "sha256": sha256_file(f)} for key, f in files.items() if f is not None}


def build_and_export(mod: tvm.IRModule, target: tvm.target.Target, out: Path) -> GpuBuild:
    ex = build(mod, target)
    library = out / "model.so"
    ex.export_library(str(library))
    calls = [line.split()[1] for line in ex.as_text().splitlines() if line.split()[:1] == ["call"]]
    launches = sum(1 for name in calls if not name.startswith("vm."))
    return GpuBuild(library, cuda_source(ex), launches)


def has_gpu() -> bool:
    return tvm.cuda(0).exist


def device_name() -> str:
    dev = tvm.cuda(0)
    return f"{dev.device_name} (compute {dev.compute_version})" if dev.exist else "none"


def load(path: Path) -> relax.VirtualMachine:
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cuda(0))


def run(vm: relax.VirtualMachine, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return host.run(vm, inputs, tvm.cuda(0))


def time_ms(vm: relax.VirtualMachine, inputs: list[np.ndarray], repeat: int) -> list[float]:
    """Per-run times from TVM's time_evaluator (it synchronises the device around each run)."""
    dev = tvm.cuda(0)
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    vm.set_input("main", *args)
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=repeat, min_repeat_ms=0)
    return [t * 1e3 for t in timer("main").results]
