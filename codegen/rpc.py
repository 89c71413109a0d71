"""Run and time an artifact on a remote device over TVM RPC (a board running `tvm.exec.rpc_server`).

The board needs the TVM runtime for its architecture (`pip install apache-tvm` works on aarch64) and
`python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090`, or a tracker that knows it by key.
"""

import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsim.errors import HwsimError


@dataclass(frozen=True)
class RpcRun:
    outputs: list[np.ndarray]
    times_ms: list[float]  # one mean per repeat, each over `number` runs
    device: str


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HwsimError(f"--rpc {address!r}: expected HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail before a long build when nothing listens at the RPC address."""
    host, port = parse_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise HwsimError(f"cannot reach the TVM RPC server at {address}: {e.strerror or e}") from None


def run_remote(library: Path, address: str, inputs: list[np.ndarray], *, key: str | None = None,
               repeat: int = 10, timeout_s: int = 60) -> RpcRun:
    """Upload `library`, run main once for the outputs, then time it with TVM's time_evaluator.

    `address` is an RPC server, or with `key` an RPC tracker to request a device from.
    """
    import tvm
    from tvm import relax, rpc

    host, port = parse_address(address)
    try:
        if key:
            remote = rpc.connect_tracker(host, port).request(key, session_timeout=timeout_s)
        else:
            remote = rpc.connect(host, port, session_timeout=timeout_s)
    except Exception as e:  # TVM raises plain RuntimeError/TVMError with a multi-line trace
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise HwsimError(f"cannot reach the TVM RPC {'tracker' if key else 'server'} at {address}: {first}") from None
    remote.upload(str(library))
    dev = remote.cpu(0)
    vm = relax.VirtualMachine(remote.load_module(library.name), dev)
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    out = vm["main"](*args)
    outputs = [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]
    vm.set_input("main", *args)
    timer = vm.time_evaluator("invoke_stateful", dev, number=5, repeat=repeat, min_repeat_ms=50)
    times = [t * 1e3 for t in timer("main").results]
    return RpcRun(outputs, times, f"rpc://{address}" + (f" key {key}" if key else "") + " (cpu 0)")
