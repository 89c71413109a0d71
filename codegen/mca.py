"""Static cycle estimates of a build's innermost loops with llvm-mca (marked `estimated`).

Every kernel's innermost loops (a label followed by a branch back to it) go into one assembly file as
named llvm-mca code regions, analysed in one call for the target's `mca_cpu` (for Cortex-A76 that is
neoverse-n1: llvm-mca's cortex-a76 silently uses the Cortex-A57 model). The figures are cycles per
loop iteration in steady state, with no cache misses: a lower bound on the loop's time, not a latency.
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from codegen.toolchain import LLVM_MCA
from hwsim.errors import HwsimError

_FUNC = re.compile(r"^\s*\.type\s+([\w.$]+),\s*[@%]function", re.M)
_LABEL = re.compile(r"^([\w.$]+):")


def innermost_loops(asm: str, comment: str) -> list[tuple[str, str, list[str]]]:
    """(function, label, instructions) of each innermost loop in LLVM's assembly output; `comment` is the
    target's assembly comment marker ('//' on aarch64, '#' on x86)."""
    functions = set(_FUNC.findall(asm))
    lines = asm.splitlines()
    loops, func, owner = [], "", ""
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if not m:
            continue
        label = m.group(1)
        if label in functions:  # parallel bodies are separate functions emitted after their kernel
            func = f"{owner} (parallel body)" if label.startswith(".L__tvm_parallel_lambda") else label
            owner = func if not label.startswith(".L") else owner
            continue
        if not label.startswith(".LBB"):
            continue
        body = []
        for nxt in lines[i + 1:]:
            if _LABEL.match(nxt) and not nxt.startswith(".Ltmp"):
                break  # another block starts: not a single-block loop
            ins = nxt.split(comment)[0].strip()
            if not ins or ins.startswith("."):
                continue
            body.append(ins)
            if ins.split()[-1] == label:
                loops.append((func, label, body))
                break
    return loops


def _is_kernel(func: str) -> bool:
    """Kernel bodies; not the packed-call wrappers (`__tvm_ffi_*`) whose loops only check arguments."""
    return not func.startswith("__tvm")


def estimate_loops(asm: str, *, triple: str, mcpu: str, max_loops: int = 400) -> dict[str, Any]:
    """Run llvm-mca over every kernel's innermost loops; return the figures for the manifest."""
    if shutil.which(LLVM_MCA) is None:
        raise HwsimError(f"{LLVM_MCA} not found: run `hwsim setup`")
    arch = triple.split("-")[0]
    loops = [lp for lp in innermost_loops(asm, "//" if arch == "aarch64" else "#") if _is_kernel(lp[0])][:max_loops]
    if not loops:
        return {"provenance": "estimated", "model": f"{LLVM_MCA} -mcpu={mcpu}", "loops": []}
    regions = [f"# LLVM-MCA-BEGIN r{i}\n" + "\n".join(body) + "\n# LLVM-MCA-END\n"
               for i, (_, _, body) in enumerate(loops)]  # '#' starts a marker on every llvm-mca target
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loops.s"
        path.write_text("".join(regions))
        r = subprocess.run([LLVM_MCA, f"-mtriple={arch}", f"-mcpu={mcpu}", "-iterations=100", str(path)],
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise HwsimError(f"{LLVM_MCA} -mcpu={mcpu} failed: {r.stderr.strip().splitlines()[-1:]}")
    stats = _parse_regions(r.stdout)
    per_func: dict[str, list[dict[str, Any]]] = {}
    for i, (func, label, body) in enumerate(loops):
        s = stats.get(f"r{i}")
        if s:
            per_func.setdefault(func, []).append(
                {"loop": label, "instructions": len(body), "cycles_per_iteration": round(s["Total Cycles"] /
                 s["Iterations"], 2), "ipc": s["IPC"]})
    rows = [{"function": func, "innermost_loops": len(ls), **max(ls, key=lambda x: x["cycles_per_iteration"])}
            for func, ls in sorted(per_func.items())]
    return {"provenance": "estimated", "model": f"{LLVM_MCA} -mtriple={arch} -mcpu={mcpu}",
            "note": "per kernel, its heaviest innermost loop: steady-state cycles per iteration with no cache "
                    "misses (a lower bound per iteration; trip counts are not modelled)",
            "loops": rows}


def _parse_regions(report: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for chunk in re.split(r"^\[\d+\] Code Region - ", report, flags=re.M)[1:]:
        name = chunk.splitlines()[0].strip()
        vals = {}
        for key in ("Iterations", "Total Cycles", "IPC", "Block RThroughput"):
            m = re.search(rf"^{key}:\s+([\d.]+)", chunk, re.M)
            if m:
                vals[key] = float(m.group(1))
        if len(vals) == 4:
            out[name] = vals
    return out
