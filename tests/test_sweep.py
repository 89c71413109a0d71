"""hwsim sweep: spec validation, a local sweep with a failing point, resuming after SIGKILL without losing or
recomputing a finished point, and the same results from a 2-worker Dask cluster on loopback."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim.cli import main
from hwsim.errors import HwsimError
from hwsim.sweep import SweepResult, run_sweep
from hwsim.sweep.spec import load_spec

Local = tuple[Path, SweepResult]  # the spec file and the first run
SPEC = """[sweep]
model = "tiny-llama"
formats = ["lora-fp16", "lordba"]
target = "sacc-32x32"
tokens = 8
verify = true

[grid]
"arrays.sign.rows" = [16, 32]
"buffers.accumulator.kib" = [64, 0]
"""


def write(tmp: Path, text: str, name: str = "s.toml") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def metrics(rows: list[dict]) -> dict:
    """What the simulation decides (the functional check's error depends on the BLAS's threads: not compared)."""
    return {r["key"]: (r["status"], r["error"], r["result"] and {k: v for k, v in r["result"].items()
                                                                 if k != "verified_max_rel_err"})
            for r in rows}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Local:
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write(tmp, SPEC)
    return spec, run_sweep(spec, out=tmp / "out", jobs=2)


def test_local_sweep_records_every_point_and_failures(local: Local) -> None:
    _, result = local
    assert len(result.rows) == 8 and result.run["computed"] == 8
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert len(failed) == 4 and all(r["config"]["buffers.accumulator.kib"] == 0 for r in failed)
    assert all("buffers.accumulator" in r["error"] for r in failed)  # the target validator's one line
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert all(r["result"]["provenance"] == "simulated" and r["result"]["verified_max_rel_err"] < 1e-3 for r in ok)
    assert all(r["result"]["area_units"] > 0 and r["result"]["latency_ms"] > 0 for r in ok)
    assert (result.root / "report.html").is_file() and "Pareto" in (result.root / "report.md").read_text()


def test_rerun_skips_finished_points(local: Local, tmp_path: Path) -> None:
    spec, first = local
    again = run_sweep(spec, out=first.root, jobs=2)
    assert again.run["computed"] == 0 and again.run["skipped"] == 8
    assert metrics(again.rows) == metrics(first.rows)


def test_same_results_on_a_dask_cluster(local: Local, tmp_path: Path) -> None:
    from distributed import LocalCluster

    spec, first = local
    shutil.copytree(first.root / "variants", tmp_path / "out" / "variants")  # exported once, reused by key
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = run_sweep(spec, out=tmp_path / "out", scheduler=cluster.scheduler_address)
    assert result.run["computed"] == 8 and result.run["executor"].startswith("dask at tcp://127.0.0.1:")
    assert metrics(result.rows) == metrics(first.rows)
    with pytest.raises(HwsimError, match="cannot reach the Dask scheduler"):
        run_sweep(spec, out=tmp_path / "other", scheduler="tcp://127.0.0.1:9")


def test_sigkill_half_way_loses_and_repeats_nothing(local: Local, tmp_path: Path) -> None:
    _, first = local
    bigger = write(tmp_path, SPEC.replace('"buffers.accumulator.kib" = [64, 0]',
                                          '"buffers.accumulator.kib" = [64, 32, 16, 0]'), "big.toml")
    out = tmp_path / "out"
    shutil.copytree(first.root / "variants", out / "variants")
    proc = subprocess.Popen([sys.executable, "-m", "hwsim.cli", "sweep", str(bigger), "--out", str(out), "--jobs", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "points.sqlite"
    deadline = time.time() + 300
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        if db.is_file():
            try:
                finished = sqlite3.connect(db).execute("SELECT COUNT(*) FROM points").fetchone()[0]
            except sqlite3.OperationalError:
                finished = 0
            if finished >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {k: run for k, run in sqlite3.connect(db).execute("SELECT key, run FROM points")}
    assert 3 <= len(before) < 16
    result = run_sweep(bigger, out=out, jobs=1)
    assert result.run["computed"] == 16 - len(before) and result.run["skipped"] == len(before)
    after = {r["key"]: r["run"] for r in result.rows}
    assert len(after) == 16
    assert all(after[k] == run for k, run in before.items())  # finished points were not computed again


@pytest.mark.parametrize("text, needle", [
    (SPEC.replace('target = "sacc-32x32"', 'target = "sacc-32x32"\nbatch = 2'), "unknown key 'sweep.batch'"),
    (SPEC.replace('"arrays.sign.rows"', '"arrays.sign.dataflow"'), "'grid.arrays.sign.dataflow' is not a numeric"),
    (SPEC.replace('"arrays.sign.rows"', '"arrays.sgn.rows"'), "'grid.arrays.sgn.rows' is not a numeric"),
    (SPEC.replace("[16, 32]", "[]"), "must be a non-empty list of numbers"),
    (SPEC.replace('"lordba"]', '"lordbaa"]'), "'sweep.formats' has 'lordbaa'"),
    (SPEC.replace('target = "sacc-32x32"', 'target = "host"'), "must be an accelerator target"),
    (SPEC + "\n[random]\nsamples = 3\n", "exactly one of the sections 'grid' and 'random'"),
    (SPEC.replace("tokens = 8", 'tokens = "8"'), "key 'sweep.tokens' must be int"),
])
def test_bad_specs_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(HwsimError) as e:
        load_spec(write(tmp_path, text))
    assert needle in str(e.value) and "s.toml" in str(e.value)


def test_random_sample_is_seeded_and_the_builtin_sweep_has_64_points(tmp_path: Path) -> None:
    spec = load_spec("sacc-64")
    assert len(spec.configs) * len(spec.formats) * len(spec.ranks) == 64
    text = SPEC.replace("[grid]", "[random]\nsamples = 3\nseed = 7")
    a, b = (load_spec(write(tmp_path, text, f"r{i}.toml")).configs for i in range(2))
    assert a == b and len(a) == 3
    with pytest.raises(HwsimError, match=r"unknown sweep 'nope'.*sacc-64"):
        load_spec("nope")


def test_cli_sweep_summarises(local: Local) -> None:
    spec, first = local
    r = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(first.root)])
    assert r.exit_code == 0, r.output
    assert "8 points (4 ok, 4 failed)" in r.output and "skipped 8" in r.output and "report:" in r.output
