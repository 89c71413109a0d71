"""ARM targets: aarch64 cross-compilation, the bundled runner under qemu, llvm-mca estimates, TVM RPC.

These need the toolchain `hwsim setup` installs (the README's test command runs it); without it they
fail with the message that says so rather than skipping.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from codegen import cross, toolchain
from hwsim.api import compile_model
from hwsim.errors import HwsimError

EM_AARCH64 = 183  # ELF e_machine


def elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


@pytest.fixture(scope="module")
def a76_build(tmp_path_factory: pytest.TempPathFactory):
    return compile_model(None, target="cortex-a76", out=tmp_path_factory.mktemp("a76") / "out")


def test_cortex_a76_build_is_aarch64_bundled_and_verified_under_qemu(a76_build) -> None:
    m, out = a76_build.manifest, a76_build.out_dir
    assert m["verification"]["passed"] and m["verification"]["executed_on"].startswith("qemu-aarch64")
    for name in ("model.so", toolchain.RUNNER, "libtvm_runtime.so", "libtvm_ffi.so"):
        assert elf_machine(out / name) == EM_AARCH64, name
    assert set(m["artifacts"]["runner"]) == {toolchain.RUNNER, "libtvm_runtime.so", "libtvm_ffi.so"}
    # nothing here can measure an A76 and qemu is not a latency: only the roofline estimate
    assert set(m["latency"]) == {"roofline"} and m["latency"]["roofline"]["provenance"] == "estimated"
    assert m["energy"]["provenance"] == "estimated"
    assert "not a latency" in m["emulation"]["note"]
    assert '"mcpu":"cortex-a76"' in m["target"]["tvm"] and "aarch64" in m["target"]["tvm"]


def test_llvm_mca_estimates_are_marked_and_plausible(a76_build) -> None:
    est = a76_build.manifest["estimates"]["loops"]
    assert est["provenance"] == "estimated" and "-mcpu=neoverse-n1" in est["model"]
    assert any("matmul" in r["function"] for r in est["loops"])
    for r in est["loops"]:
        # llvm-mca's neoverse-n1 dispatches at most 8 instructions per cycle
        assert r["cycles_per_iteration"] >= r["instructions"] / 8 > 0


def test_runner_round_trips_dtypes_under_qemu(a76_build, tmp_path: Path) -> None:
    """The runner reads int64 token ids and writes float32 logits: same values as the verification run."""
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    first = cross.run_qemu(a76_build.out_dir, [ids], threads=2)
    again = cross.run_qemu(a76_build.out_dir, [ids], threads=1)
    assert first.outputs[0].dtype == np.float32 and first.outputs[0].shape == (1, 16, 512)
    np.testing.assert_array_equal(first.outputs[0], again.outputs[0])  # thread count does not change results


def test_runner_reports_a_bad_input_file(a76_build, tmp_path: Path) -> None:
    bad = tmp_path / "in0.npy"
    bad.write_bytes(b"not numpy")
    r = subprocess.run([toolchain.QEMU, "-L", str(toolchain.SYSROOT), str(a76_build.out_dir / toolchain.RUNNER),
                        str(a76_build.out_dir / "model.so"), str(tmp_path), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "not an .npy file" in r.stderr


@pytest.mark.parametrize("target", ["cortex-a72", "cortex-a55"])
def test_other_arm_targets_build_and_verify(target: str, tmp_path: Path) -> None:
    m = compile_model(None, target=target, out=tmp_path / "out").manifest
    assert m["verification"]["passed"]
    assert f"-mcpu={ {'cortex-a72': 'cortex-a72', 'cortex-a55': 'cortex-a55'}[target]}" in \
        m["estimates"]["loops"]["model"]


def test_missing_toolchain_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(toolchain.shutil, "which", lambda _name: None)
    with pytest.raises(HwsimError, match="run `hwsim setup`"):
        compile_model(None, target="cortex-a76", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rpc_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                             str(port), "--port-end", str(port + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "the RPC server died at startup"
            time.sleep(0.3)
    yield f"127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_rpc_verifies_and_measures_on_the_remote(rpc_server: str, tmp_path: Path) -> None:
    m = compile_model(None, rpc=rpc_server, out=tmp_path / "out", runs=3).manifest
    lat = m["latency"]["tvm"]
    assert lat["provenance"] == "measured" and rpc_server in lat["device"] and lat["median_ms"] > 0
    assert m["verification"]["remote"]["passed"] and m["verification"]["remote"]["max_rel_err"] < 1e-3
    assert "onnxruntime" not in m["latency"]  # measured elsewhere: no ratio against a remote device


def test_cli_rpc_unreachable_is_exit_2_before_building(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    r = subprocess.run([sys.executable, "-m", "hwsim.cli", "compile", "--rpc", f"127.0.0.1:{port}", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot reach the TVM RPC server" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["nohost", "host:", ":9090", "host:99999", "host:port"])
def test_bad_rpc_address_names_the_form(address: str) -> None:
    with pytest.raises(HwsimError, match="expected HOST:PORT"):
        compile_model(None, rpc=address)


def test_setup_check_reports_the_toolchain() -> None:
    r = subprocess.run([sys.executable, "-m", "hwsim.cli", "setup", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert toolchain.QEMU in r.stdout and toolchain.LLVM_MCA in r.stdout
