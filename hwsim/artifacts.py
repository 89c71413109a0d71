"""Atomic output directories and content hashes: nothing half-written, nothing overwritten silently."""

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError

TOOLS = ("hwsim", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "numpy")


def tool_versions() -> dict[str, str]:
    return {t: metadata.version(t) for t in TOOLS}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write beside `path`, then rename over it: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    for p in path.parents:
        if p.exists():
            break
        missing.append(p)
    return missing


@contextmanager
def atomic_dir(final: Path, *, force: bool) -> Iterator[Path]:
    """Yield an empty temp dir beside `final`; move it into place only if the block succeeds.

    An existing `final` is replaced only with `force`. On failure the temp dir, and any parent
    directories this call created, are removed.
    """
    if final.exists() and not force:
        raise HwsimError(f"{final} already exists: pass --force to replace it, or choose another --out")
    created = _missing_parents(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any mkdir
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            final.rename(old / "x")
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:
            with suppress(OSError):
                p.rmdir()
        raise


@functools.cache
def source_hash() -> str:
    """Hash of hwsim's own code, so a changed compiler invalidates cached builds during development."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("hwsim", "codegen", "targets"):
        for f in sorted((root / pkg).rglob("*")):
            if f.suffix in (".py", ".toml") and f.is_file():
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]
