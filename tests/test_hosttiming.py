"""Host builds timed in fresh processes: passes, rounds, the quietest round, failures kept per build."""

from pathlib import Path

import numpy as np
import pytest
from onnx_util import save, single_node_model

from hwsim import hosttiming
from hwsim.api import compile_model
from hwsim.errors import HwsimError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A host build of one MatMul, built and verified but not timed: (its directory, its ONNX file)."""
    root = tmp_path_factory.mktemp("timing")
    x = np.zeros((4, 64), np.float32)
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    onnx = save(single_node_model("MatMul", {"x": x}, {"w": w}), root / "mm.onnx")
    result = compile_model(str(onnx), out=root / "build", measure=False)
    assert "pending" in result.manifest["latency"]
    return root / "build", onnx


def job(build: Path, onnx: Path | None, lib: str = "model.so") -> hosttiming.Job:
    return hosttiming.Job(build / lib, onnx, ["x"], [np.ones((4, 64), np.float32)], threads=_threads())


def _threads() -> int:
    from codegen.host import runtime_threads

    return runtime_threads()


def test_every_pass_is_a_process_of_its_own_and_a_failing_build_does_not_stop_the_others(
        built: tuple[Path, Path]) -> None:
    build, onnx = built
    got = hosttiming.time_builds([job(build, onnx), job(build, None, "missing.so"), job(build, None)], runs=4,
                                 passes=2, rounds=2, round_s=0.01)
    assert [len(g.tvm) for g in got] == [4, 0, 4] and [len(g.onnxruntime) for g in got] == [4, 0, 0]
    assert all(len(r) >= 1 and min(r) > 0 for r in got[0].tvm + got[0].onnxruntime)
    assert got[0].profile["calls"] and got[2].profile["calls"]  # the VM's instrument, from the first pass
    assert got[0].error is None and got[2].error is None
    assert isinstance(got[1].error, HwsimError) and "missing.so" in str(got[1].error)


def test_relative_paths_are_the_caller_s(built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The children run in the checkout's root: a build named relative to the caller's directory is still found."""
    build, onnx = built
    monkeypatch.chdir(build.parent)
    (got,) = hosttiming.time_builds([job(Path(build.name), Path(onnx.name))], runs=1, passes=1, rounds=1,
                                    round_s=0.01)
    assert got.error is None and len(got.tvm) == 1 and len(got.onnxruntime) == 1


def test_a_compile_reports_the_quietest_round_and_every_round(tmp_path: Path, built: tuple[Path, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWSIM_TIMING_PASSES", "2")
    m = compile_model(str(built[1]), out=tmp_path / "b", runs=3).manifest
    for who in ("tvm", "onnxruntime"):
        lat = m["latency"][who]
        assert len(lat["round_medians_ms"]) == 2 * hosttiming.ROUNDS
        assert lat["median_ms"] == min(lat["round_medians_ms"]) and lat["provenance"] == "measured"
        assert "2 fresh processes" in lat["method"]
    assert m["latency"]["tvm_over_onnxruntime"] == pytest.approx(
        m["latency"]["tvm"]["median_ms"] / m["latency"]["onnxruntime"]["median_ms"], abs=1e-3)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_timing_passes_must_be_a_positive_whole_number(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HWSIM_TIMING_PASSES", value)
    with pytest.raises(HwsimError, match="HWSIM_TIMING_PASSES"):
        hosttiming.passes()


def test_a_bad_timing_passes_fails_before_the_build(tmp_path: Path, built: tuple[Path, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWSIM_TIMING_PASSES", "0")
    with pytest.raises(HwsimError, match="HWSIM_TIMING_PASSES"):
        compile_model(str(built[1]), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
