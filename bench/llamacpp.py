"""llama.cpp as a whole-model CPU baseline for bench/whole_model.py (bench only, never in CI).

Built from the llama.cpp source vendored in PyPI's `llama-cpp-python` sdist (pip download, cmake, the
machine's native ISA), the zoo model's Hugging Face weights converted to GGUF F32 and F16 by its
convert_hf_to_gguf.py (its gguf-py, and `sentencepiece`, which the converter imports) and quantised by its
llama-quantize; timed by its own llama-bench (a C++ loop: it pays no Python call per token, unlike the other
contestants). llama-bench cannot load a LoRA adapter, so llama.cpp runs the base model alone. Quantised types
whose 256-weight blocks do not divide a tensor's rows fall back to another type per tensor (TQ2_0/TQ1_0 ->
Q4_0): the fallback count is reported beside the figure.

Everything is cached under build/llama.cpp/ (the sdist, the build, the GGUF files).
"""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path("build/llama.cpp")
QUANTISED = ("Q4_0", "TQ2_0", "TQ1_0")


def _run(cmd: list[str], log: Path, **kw) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    log.write_text(out.stdout + out.stderr)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:3]))} ... failed (exit {out.returncode}); see {log}")
    return out.stdout + out.stderr


def source() -> Path:
    """The vendored llama.cpp source of the newest llama-cpp-python sdist (downloaded once)."""
    ROOT.mkdir(parents=True, exist_ok=True)
    sdists = sorted(ROOT.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        _run([sys.executable, "-m", "pip", "download", "llama-cpp-python", "--no-deps", "--no-binary", ":all:",
              "-d", str(ROOT)], ROOT / "download.log")
        sdists = sorted(ROOT.glob("llama_cpp_python-*.tar.gz"))
    top = ROOT / sdists[-1].name.removesuffix(".tar.gz")
    if not top.is_dir():
        with tarfile.open(sdists[-1]) as tar:
            tar.extractall(ROOT, filter="data")
    return top / "vendor" / "llama.cpp"


def build(threads: int) -> Path:
    """llama-bench and llama-quantize built for this CPU; their directory."""
    src = source()
    out = src / "build"
    binaries = out / "bin"
    if not (binaries / "llama-bench").is_file() or not (binaries / "llama-quantize").is_file():
        _run(["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
              "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
             ROOT / "cmake.log")
        _run(["cmake", "--build", str(out), "-j", str(threads), "--target", "llama-bench", "llama-quantize"],
             ROOT / "build.log")
    return binaries


def gguf_files(hf_dir: Path, name: str, binaries: Path) -> dict[str, tuple[Path, int]]:
    """GGUF type -> (file, tensors that fell back to another type), converted once."""
    src = source()
    files: dict[str, tuple[Path, int]] = {}
    env = {"PYTHONPATH": str(src / "gguf-py")}
    for kind in ("f32", "f16"):
        path = ROOT / f"{name}-{kind}.gguf"
        if not path.is_file():
            _run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", kind, "--outfile",
                  str(path)], ROOT / f"convert-{kind}.log", env={**os.environ, **env})
        files[kind.upper()] = (path, 0)
    for qtype in QUANTISED:
        path = ROOT / f"{name}-{qtype}.gguf"
        log = ROOT / f"quantize-{qtype}.log"
        if not path.is_file():
            _run([str(binaries / "llama-quantize"), str(files["F32"][0]), str(path), qtype], log)
        files[qtype] = (path, len(re.findall(r"falling back to", log.read_text())))
    return files


def bench(binaries: Path, gguf: Path, threads: int, prefill: int, context: int, reps: int) -> dict[str, list[float]]:
    """ms of each of `reps` prefills of `prefill` tokens (empty cache) and of `reps` decoded tokens after
    `context` tokens, in llama-bench's order, from one llama-bench process per phase."""
    def samples(args: list[str]) -> list[float]:
        out = subprocess.run([str(binaries / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-r", str(reps),
                              "-o", "json", *args], capture_output=True, text=True, check=True).stdout
        return [ns / 1e6 for ns in json.loads(out)[0]["samples_ns"]]
    return {"prefill": samples(["-p", str(prefill), "-n", "0"]),
            "decode": samples(["-p", "0", "-n", "1", "-d", str(context)])}
