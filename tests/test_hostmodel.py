"""The calibrated host latency model: the census a CPU build takes of its kernel calls, the model's
arithmetic and fit, and (slow) a calibration on this machine predicting a model it was not fitted to."""

import numpy as np
import pytest
import tvm

from codegen import census, host
from codegen.relax_lower import to_relax
from hwsim import hostmodel
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
from models.formats.packing import pack_signs
from targets import load_target

HOST = host.tvm_target(load_target("host"))
F32 = DType.FLOAT32


def _graph() -> Graph:
    """fp32 linear (a dense kernel), then a sign accumulate with an output scale (a LUT kernel), then a softmax."""
    rng = np.random.default_rng(0)
    x = Value("x", TensorType((1, 1, 256), F32))
    w = Value.const("w", rng.standard_normal((256, 256)).astype(np.float32))
    signs = Value.const("signs", pack_signs(rng.integers(0, 2, (256, 256)) * 2 - 1))
    post = Value.const("post", np.full(256, 0.1, np.float32))
    h, y, z = (Value(n, TensorType((1, 1, 256), F32)) for n in ("h", "y", "z"))
    return Graph("g", [x], [z], [Node(Op.MATMUL, [x, w], [h]),
                                 Node(Op.SIGN_ACCUMULATE, [h, signs, post], [y], {"k": 256, "pre": 0, "post": 1}),
                                 Node(Op.SOFTMAX, [y], [z], {"axis": -1})])


def test_census_counts_the_kernels_and_the_bytes_a_build_streams() -> None:
    g = _graph()
    run_pipeline(g, DEFAULT_PIPELINE)
    sink: list[dict] = []
    with HOST:
        host.cpu_pipeline(HOST, sink)(to_relax(g, HOST))
    (c,) = sink
    by_class = {k["class"]: k for k in c["kernels"]}
    signs = next(k for k in c["kernels"] if "sign_accumulate" in k["name"])
    assert signs["class"] in (census.LUTS if "avx2" in host_isas() else ("accumulate",))
    assert set(by_class) == {"dense", signs["class"], "math"}
    assert by_class["dense"]["weight_bytes"] == 256 * 256 * 4 and by_class["dense"]["flops"] == 2 * 256 * 256
    assert 256 * 256 // 8 <= signs["weight_bytes"] <= 256 * 256 // 8 + 2048  # packed bits (+ the scale)
    if signs["class"] in census.LUTS:  # its tables: 16 entries per group of 4 inputs, for the one row
        assert signs["table_entries"] == 4 * 256
    assert all(k["calls"] == 1 for k in c["kernels"])
    assert sum(c["vm_calls"].values()) > 0
    assert hostmodel.weight_bytes(c) == sum(k["weight_bytes"] for k in c["kernels"])


def host_isas() -> list[str]:
    from codegen.kernels import shuffle_isas

    return shuffle_isas(HOST)


def test_classes_follow_the_kernel_generators() -> None:
    assert census.CLASSES == hostmodel.CLASSES  # hwsim's model keeps its own copy (hwsim imports no TVM)
    assert census.classify("ternary_accumulate_lut_avx512vnni_post_1x576x576") == "lut_vnni"
    assert census.classify("sign_accumulate_lut_avx2_post_add_1x576x16") == "lut"
    assert census.classify("fused_expand_dims_add") == "other"  # whole ops, not substrings: not "exp"
    assert census.classify("sign_accumulate_select_pre_post_1x16x576") == "accumulate"
    assert census.classify("dense_float32_float16_1x49152x576") == "dense"
    assert census.classify("dot_3x3x129x64") == "attention"
    assert census.classify("fused_matmul_add3") == "matmul"
    assert census.classify("fused_reshape8_transpose1_reshape9_multiply5") == "layout"
    assert census.classify("fused_mean_add1_tir_sqrt_divide_multiply1_multiply2") == "other"  # an RMSNorm
    assert census.classify("layer_norm") == "norm"
    assert census.classify("fused_reshape8_add4_gelu_reshape9") == "erf"
    assert census.classify("fused_fast_softmax_tir_isnan_where2") == "math"
    assert census.classify("fused_reshape8_<lambda>_multiply5_reshape8_multiply5_reshape9") == "math"  # SiLU
    kv = census.kernel_call("kv_write_30x1x3x129x64_2_float32", [((30, 1, 3, 129, 64), 3962880, False),
                                                                  ((1, 3, 1, 64), 768, False)], False)
    assert kv["act_bytes"] == 2 * 768  # an in-place write touches its rows, not the cache


def _census(kernels: list[tuple[str, int, int, int, int]], vm: int = 0) -> dict:
    return {"kernels": [{"name": n, "class": census.classify(n), "parallel": f >= 1 << 19, "weight_bytes": w,
                         "act_bytes": a, "flops": f, "calls": c} for n, w, a, f, c in kernels],
            "vm_calls": {"vm.builtin.alloc_tensor": vm}}


def test_fit_recovers_the_rates_that_made_the_times() -> None:
    """Times made from known rates are fitted back to those rates, and the prediction switches regime where
    the streamed weights outgrow the cache."""
    llc = 4 << 20  # the cache regime: up to half of it
    truth = dict.fromkeys(hostmodel.parameter_names(), 0.0) | {
        "fixed_us.dense": 2.0, "fixed_us.other": 0.5, "ns_per_weight_byte.dense.cache": 0.01,
        "ns_per_weight_byte.dense.dram": 0.05, "ns_per_flop.dense.cache": 0.004, "ns_per_flop.dense.dram": 0.006,
        "ns_per_act_byte": 0.02, "vm_call_us": 0.1}
    cal = hostmodel.Calibration("cpu", 2, llc, "src", truth, 0.0, [])
    censuses = [_census([(f"dense_float32_float32_{m}x{n}x{n}", 4 * n * n, 8 * m * n, 2 * m * n * n, layers),
                         ("fused_mean_multiply", 0, 8 * m * n, m * n, layers + v % 5)], vm=v)
                for m, n, layers, v in [(1, 256, 4, 8), (16, 256, 4, 30), (1, 1024, 8, 20), (16, 1024, 8, 16),
                                        (1, 128, 16, 40), (64, 512, 2, 6), (4, 2048, 4, 9), (1, 4096, 2, 5),
                                        (8, 128, 4, 25), (1, 64, 8, 12), (2, 1536, 3, 7)]]
    times = [hostmodel.predict(c, cal)["median_ms"] * 1e3 for c in censuses]
    assert {hostmodel.regime(c, llc) for c in censuses} == {"cache", "dram"}
    fitted = hostmodel.fit([hostmodel.features(c, llc) for c in censuses], times)
    refit = hostmodel.Calibration("cpu", 2, llc, "src", fitted, 0.0, [])
    for c, t in zip(censuses, times, strict=True):
        assert hostmodel.predict(c, refit)["median_ms"] * 1e3 == pytest.approx(t, rel=1e-6)
    for name in ("fixed_us.dense", "ns_per_weight_byte.dense.dram", "ns_per_flop.dense.cache", "vm_call_us"):
        assert fitted[name] == pytest.approx(truth[name], rel=1e-3), name


@pytest.mark.slow
def test_calibration_predicts_a_model_it_was_not_fitted_to(tmp_path, monkeypatch) -> None:
    """A calibration on this machine (minutes) predicts a small decoder layer stack within 2x; the acceptance
    band (0.75-1.25 on the zoo's host builds) is checked by bench/host_model.py, not here (noisy machines)."""
    from codegen import calibrate
    from hwsim.reference import random_inputs

    monkeypatch.setenv("HWSIM_CACHE_DIR", str(tmp_path))
    cal = calibrate.cached(2)
    assert calibrate.cache_path(2).exists() and len(cal.benchmarks) >= 30
    g = _graph()
    run_pipeline(g, DEFAULT_PIPELINE)
    sink: list[dict] = []
    vm = tvm.relax.VirtualMachine(host.build(to_relax(g, HOST), HOST, sink), tvm.cpu())
    measured = float(np.median(host.time_ms(vm, random_inputs(g, 0))))
    assert 0.5 <= hostmodel.predict(sink[-1], cal)["median_ms"] / measured <= 2.0
