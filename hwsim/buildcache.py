"""The build cache: a build's directory holds its manifest under a content key, or, when it failed for a
reason its inputs decide, failure.json under the same key. Looked up before any build starts, so an
unchanged matrix reruns without building, and a failure is the cached answer until --force retries it."""

import functools
import json
from pathlib import Path
from typing import Any

from hwsim.artifacts import atomic_dir, sha256_file, write_json
from hwsim.errors import CachedFailure, describe

FAILURE_SCHEMA, FAILURE = "hwsim.failure/1", "failure.json"


@functools.cache
def _file_hash_at(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def file_hash(path: Path) -> str:
    """sha256 of a file, read once per process while its mtime and size stay (a matrix hashes each variant's
    ONNX file for every target and phase)."""
    st = path.stat()
    return _file_hash_at(path.resolve(), st.st_mtime_ns, st.st_size)


PENDING = "pending"  # a manifest's latency key while a host build waits to be timed (compile_model measure=False)


def lookup(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The cached manifest of a successful build, or the record of a failed one (status 'failed'), or None."""
    return _cached_manifest(out_dir, key) or _cached_failure(out_dir, key)


def failure_line(record: dict[str, Any]) -> str:
    return f"{record['error']} (cached failure of this exact build; --force retries it)"


def record_failure(out_dir: Path, key: str, error: BaseException, options: dict[str, Any]) -> None:
    """Replace the build directory by the failure's record (atomically: the old build or the record)."""
    with atomic_dir(out_dir, force=True) as tmp:
        write_json(tmp / FAILURE, {"schema": FAILURE_SCHEMA, "cache_key": key, "status": "failed",
                                   "error": describe(error), "options": options})


def deterministic(e: BaseException) -> bool:
    """Failures that the build's inputs decide (a rerun fails the same way); not a full disk, a killed
    process or a missing tool, which a rerun may not meet."""
    return isinstance(e, Exception) and not isinstance(e, OSError | MemoryError | TimeoutError | CachedFailure)


def _cached_manifest(out_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        files = [out_dir / f for f in _artifact_files(manifest["artifacts"])]
    except (OSError, ValueError, KeyError, TypeError):  # no manifest, or not one of ours
        return None
    return manifest if manifest.get("cache_key") == key and all(f.is_file() for f in files) else None


def _artifact_files(artifacts: dict[str, Any]) -> list[str]:
    """The files a manifest's artifacts name: {"file": name, "sha256": ...} entries, or {name: sha256} groups
    (an ARM build's bundled runner and runtime libraries)."""
    out = []
    for entry in artifacts.values():
        out += [entry["file"]] if "file" in entry else list(entry)
    return out


def _cached_failure(out_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        record = json.loads((out_dir / FAILURE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cache_key") == key else None


