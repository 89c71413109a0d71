"""Targets are data: the loader rejects bad files naming the key, and lists known targets."""

from pathlib import Path

import pytest

from hwsim.errors import HwsimError
from targets import known_targets, load_target

GOOD = """name = "t"
kind = "cpu"
description = "test"
[tvm]
kind = "llvm"
mcpu = "generic"
num_cores = 2
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return str(p)


def test_builtin_host_loads() -> None:
    t = load_target("host")
    assert t.name == "host" and t.tvm.kind == "llvm" and "host" in known_targets()


def test_good_file_loads(tmp_path: Path) -> None:
    assert load_target(write(tmp_path, GOOD)).tvm.num_cores == 2


@pytest.mark.parametrize("text, needle", [
    (GOOD + "clock_ghz = 2.0\n", "unknown key 'tvm.clock_ghz'"),
    (GOOD.replace('kind = "cpu"\n', 'kind = "cpu"\ncolour = "red"\n'), "unknown key 'colour'"),
    (GOOD.replace('mcpu = "generic"\n', ""), "missing key 'tvm.mcpu'"),
    (GOOD.replace("num_cores = 2", "num_cores = -1"), "key 'tvm.num_cores' must be >= 0"),
    (GOOD.replace("num_cores = 2", 'num_cores = "two"'), "key 'tvm.num_cores' must be int"),
    (GOOD + "num_cores = 4\n", "invalid TOML"),  # duplicate key
    (GOOD.replace('kind = "cpu"', 'kind = "fpga"'), "key 'kind' must be one of cpu"),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(HwsimError, match=None) as e:
        load_target(write(tmp_path, text))
    assert needle in str(e.value) and "t.toml" in str(e.value)


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(HwsimError, match=r"unknown target 'nope' \(known: .*host"):
        load_target("nope")
