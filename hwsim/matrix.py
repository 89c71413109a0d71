"""`hwsim compile` over a matrix: format variants x targets x phases (prefill, decode), built in parallel
where the machine allows, under one progress display, then the comparison report.

Variants of a built-in or Hugging Face model: each adapter format at the trained rank ("matched rank"),
and, for comparisons at matched adapter bytes, each format at the largest rank whose adapter fits in the
bytes of LoRDBA at the trained rank (smaller ranks are the truncated SVD of the trained adapter's dW);
each base format with the fp16 LoRA adapter. Every variant is exported to ONNX once (cached by a content
key), with its bytes, reconstruction and output errors and its training state measured on the way. An
ONNX file is one variant, compiled as it is.

Jobs are hwsim compiles (each cached by its own key, a deterministic failure too: hwsim/buildcache.py),
looked up before any starts. Builds that measure nothing here (cross-compiled, CUDA, simulated) run in a
process pool; the host builds, which are timed, run one at a time afterwards, so no measurement shares the
machine with a build. The variant plan, the exports, the host's branch-overhead measurement and the report
are cached too: an unchanged rerun writes nothing.
"""

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.artifacts import sha256_file, source_hash, write_atomic
from hwsim.errors import CachedFailure, HwsimError, VerificationError, describe
from targets import load_target

MATRIX_SCHEMA = "hwsim.matrix/1"
DEFAULT_TARGETS = ("host", "cortex-a76", "nvidia-h100", "sacc-32x32")
DEFAULT_FORMATS = ("lora-fp16", "lordba", "ternary", "tritplane")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    id: str
    adapter_format: str | None  # None: no adapter format applied (an ONNX file as it is)
    base_format: str
    rank: int | None = None  # adapter rank; None: as trained
    matched: str = "rank"  # "rank", "bytes" or "as-is"


@dataclass(frozen=True)
class Job:
    variant: str
    target: str  # the target's name
    phase: str  # "prefill", "decode", or "as-given" for an ONNX file
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    target_file: str = ""  # where the target was loaded from, when not a built-in name

    def path(self, root: Path) -> Path:
        return root / self.variant / self.target / self.phase


def _variant_id(adapter: str | None, base: str, rank: int | None = None) -> str:
    name = adapter or "as-is"
    if base not in ("fp32", "as-is"):
        name += f"+{base}"
    return name + (f"@r{rank}" if rank else "")


def plan_variants(adapter_formats: list[str], base_formats: list[str]) -> list[Variant]:
    """Matched-rank variants; the matched-bytes ones are added once the budget is known."""
    out = [Variant(_variant_id(f, "fp32"), f, "fp32") for f in adapter_formats]
    out += [Variant(_variant_id("lora-fp16", b), "lora-fp16", b) for b in base_formats]
    return out


def _adapter_bits(lora: Any, fmt: str) -> int:
    from models.peft_io import convert_adapter

    return sum(r.fitted.bits() for r in convert_adapter(lora, fmt))


def matched_bytes_variants(lora: Any, adapter_formats: list[str]) -> tuple[list[Variant], int]:
    """Each format at the largest rank whose adapter bytes fit LoRDBA's at the trained rank (the budget)."""
    trained = int(lora.config["r"])
    budget = _adapter_bits(lora, "lordba")
    out = []
    for fmt in adapter_formats:
        rank = next((r for r in range(trained, 0, -1)
                     if _adapter_bits(lora if r == trained else lora.truncated(r), fmt) <= budget), 1)
        if rank != trained:
            out.append(Variant(_variant_id(fmt, "fp32", rank), fmt, "fp32", rank, "bytes"))
    return out, budget // 8


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_files_hash(model: str, adapter: str | None) -> str:
    from models.zoo import ZOO, zoo_dir

    root = zoo_dir(model) if model in ZOO else Path(model)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors"))
    if adapter:
        files += sorted(p for p in Path(adapter).rglob("*") if p.is_file())
    return _key([(str(p.relative_to(p.anchor)), sha256_file(p)) for p in files])


def prepare_variants(model: str, adapter: str | None, variants: list[Variant], root: Path, tokens: int,
                     seed: int, rtol: float, retry_failed: bool, progress: Progress) -> dict[str, dict[str, Any]]:
    """Export every variant (cached) and measure its bytes, errors and training state.

    A variant whose export fails its check (torch vs onnxruntime) is recorded with the reason, under the
    same key, and its builds are reported failed; it is retried only with `retry_failed`."""
    files = _model_files_hash(model, adapter)
    out: dict[str, dict[str, Any]] = {}
    reference = None
    for v in variants:
        path = root / "variants" / f"{v.id}.onnx"
        info_path = path.with_suffix(".json")
        key = _key(MATRIX_SCHEMA, files, asdict(v), seed, tokens, rtol, source_hash())
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            failed = info.get("status") == "failed"
            if info.get("key") == key and (path.is_file() or (failed and not retry_failed)):
                out[v.id] = info
                continue
        progress(f"fitting and exporting {v.id}")
        if reference is None:
            reference = _reference_outputs(model, adapter, seed)
        try:
            info = _export_variant(model, adapter, v, path, key, reference, tokens, seed, rtol)
        except VerificationError as e:  # the export check: this variant fails, the matrix goes on
            info = {"key": key, **asdict(v), "status": "failed", "error": describe(e)}
        _write_json_atomic(info_path, info)
        out[v.id] = info
    return out


def _reference_outputs(model: str, adapter: str | None, seed: int) -> np.ndarray:
    """The unquantised model's outputs (fp32 base, trained fp32 adapter) that output errors are measured on."""
    import torch

    from models.variants import apply_formats, load_adapter_for, load_base

    base = load_base(model)
    apply_formats(base, load_adapter_for(base, adapter), "reference", "fp32")
    with torch.no_grad():
        return base.wrapper()(*base.inputs(seed)).numpy()


def _export_variant(model: str, adapter: str | None, v: Variant, path: Path, key: str, reference: np.ndarray,
                    tokens: int, seed: int, rtol: float) -> dict[str, Any]:
    import torch

    from models.peft_io import convert_adapter
    from models.sign_training import adapter_training_state
    from models.variants import apply_formats, export_variant, load_adapter_for, load_base, variant_summary

    base = load_base(model)
    trained = lora = load_adapter_for(base, adapter)
    if lora is not None and v.rank:
        lora = lora.truncated(v.rank)
    report = apply_formats(base, lora, v.adapter_format if lora is not None else None, v.base_format)
    with torch.no_grad():
        got = base.wrapper()(*base.inputs(seed)).numpy()
    info = {"key": key, **asdict(v), "status": "ok", **variant_summary(report),
            "rank": v.rank or (int(lora.config["r"]) if lora is not None else None),
            "output_rel_error": float(np.linalg.norm(got - reference) / np.linalg.norm(reference)),
            "hidden_size": int(getattr(base.model.config, "hidden_size", 0)),
            "inputs": base.io_names()[0]}
    if got.ndim == 2:  # sentence embeddings: cosine similarity to the unquantised model's
        cos = (got * reference).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(reference, axis=-1))
        info["cosine_similarity"] = float(cos.mean())
    if lora is not None and v.adapter_format:
        fitted = convert_adapter(lora, v.adapter_format)
        st = adapter_training_state(v.adapter_format, fitted, tokens)
        info["training_state"] = {**asdict(st), "total": st.total, "tokens": tokens}
        # against the trained adapter's dW (a truncated adapter's own dW would hide the truncation)
        info["adapter_rel_error"] = float(np.mean([_rel(trained, r) for r in fitted]))
    path.parent.mkdir(parents=True, exist_ok=True)
    info["export_check"] = export_variant(base, path, force=True, seed=seed, rtol=rtol)["check"]
    info["onnx"] = str(path)
    return info


def _rel(trained: Any, fitted: Any) -> float:
    """||dW - dW_hat|| / ||dW|| of one module, dW the trained adapter's (fitted: a ModuleResult)."""
    a, b = trained.modules[fitted.name]
    dw = trained.scaling(fitted.name) * b.astype(np.float64) @ a.astype(np.float64)
    return float(np.linalg.norm(dw - fitted.fitted.reconstruct()) / np.linalg.norm(dw))


def _write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def _run_job(job: Job, onnx: str, root: str, retry_failed: bool, runs: int, rtol: float, rpc: str | None,
             rpc_key: str | None) -> dict[str, Any]:
    """One compile; failures are recorded, not raised (a failed target must not stop the matrix), and a
    deterministic one is cached in the job's directory like a build."""
    from hwsim.api import compile_model

    entry = _entry(job, root)
    try:
        # the matrix directory is ours: a job whose inputs changed replaces its stale build (force)
        result = compile_model(onnx, target=job.target_file or job.target, shapes=dict(job.shapes),
                               out=job.path(Path(root)), force=True, runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key,
                               record_failure=True, retry_failed=retry_failed)
        return {**entry, "status": "ok", "cached": result.cached}
    except Exception as e:  # every failure is reported in the matrix: HwsimError, verification, TVM, qemu
        return {**entry, "status": "failed", "error": describe(e), "cached": isinstance(e, CachedFailure)}


def _entry(job: Job, root: str) -> dict[str, Any]:
    entry = {**asdict(job), "dir": str(job.path(Path(root)).relative_to(root))}
    entry.pop("target_file")
    return entry


def _lookup(job: Job, onnx: str, root: str, retry_failed: bool, runs: int, rtol: float, rpc: str | None,
            rpc_key: str | None) -> dict[str, Any] | None:
    """The job's entry when the cache answers it (a build, or a failure not to be retried), else None: a
    rerun of an unchanged matrix starts no build process at all. Takes _run_job's arguments."""
    from hwsim.api import plan_build
    from hwsim.buildcache import failure_line, lookup

    plan = plan_build(onnx, target=job.target_file or job.target, shapes=dict(job.shapes), out=job.path(Path(root)),
                      runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key)
    found = lookup(plan.out_dir, plan.key)
    if found is None or (found.get("status") == "failed" and retry_failed):
        return None
    entry = _entry(job, root)
    if found.get("status") == "failed":
        return {**entry, "status": "failed", "cached": True, "error": failure_line(found)}
    return {**entry, "status": "ok", "cached": True}


def run_jobs(jobs: list[Job], onnx: dict[str, str], root: Path, *, retry_failed: bool, workers: int, runs: int,
             rtol: float, rpc: str | None, rpc_key: str | None, progress: Progress) -> list[dict[str, Any]]:
    """Cache hits first, then the unmeasured builds in a pool of `workers` processes, then the timed host
    builds one by one."""
    def spec(job: Job) -> Any:
        return load_target(job.target_file or job.target)

    def measured_here(job: Job) -> bool:
        s = spec(job)
        return s.kind == "cpu" and not s.tvm.mtriple and not rpc

    def args(j: Job) -> tuple:
        cpu_rpc = rpc if spec(j).kind == "cpu" else None
        return j, onnx[j.variant], str(root), retry_failed, runs, rtol, cpu_rpc, rpc_key if cpu_rpc else None

    results: list[dict[str, Any]] = []
    todo = []
    progress("looking up cached builds")
    for j in jobs:
        hit = _lookup(*args(j))
        if hit is None:
            todo.append(j)
        else:
            results.append(hit)
    done = len(results)
    pooled = [j for j in todo if not measured_here(j)]
    serial = [j for j in todo if measured_here(j)]
    if pooled and workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_job, *args(j)): j for j in pooled}
            for fut in as_completed(futures):
                results.append(fut.result())
                done += 1
                progress(f"built {done}/{len(jobs)}: {futures[fut].variant} on {futures[fut].target}")
    else:
        serial = pooled + serial
    for j in serial:
        progress(f"building {done + 1}/{len(jobs)}: {j.variant} on {j.target} ({j.phase})")
        results.append(_run_job(*args(j)))
        done += 1
    order = {(j.variant, j.target, j.phase): i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["variant"], r["target"], r["phase"])])


@dataclass(frozen=True)
class MatrixResult:
    root: Path
    matrix: dict[str, Any]
    report: Path


def compile_matrix(model: str | None, *, adapter: str | None = None, formats: list[str] | None = None,
                   base_formats: list[str] | None = None, targets: list[str] | None = None,
                   tokens: int | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
                   out: Path | None = None, force: bool = False, workers: int | None = None, runs: int = 20,
                   seed: int = 0, rtol: float = 1e-3, rpc: str | None = None, rpc_key: str | None = None,
                   overhead: bool = True, progress: Progress | None = None) -> MatrixResult:
    """Build the matrix and write the report (see the module docstring); returns where they are.

    Everything is cached by content: an unchanged rerun builds, fits, measures and writes nothing. `force`
    retries cached failures (and replaces an output directory that is not a hwsim matrix)."""
    from hwsim.api import resolve_model
    from models.zoo import DEFAULT_MODEL, ZOO

    step = progress or (lambda _m: None)
    model = model or DEFAULT_MODEL
    targets = list(targets or DEFAULT_TARGETS)
    specs = [load_target(t) for t in targets]  # unknown targets fail before any work
    if rpc:
        from codegen.rpc import check_reachable

        check_reachable(rpc)
    onnx_file = Path(model).suffix == ".onnx"
    if not onnx_file and model not in ZOO and not (Path(model) / "config.json").is_file():
        raise HwsimError(f"{model}: not an .onnx file, a built-in model ({', '.join(sorted(ZOO))}) nor a Hugging Face "
                         "model directory (no config.json)")
    if adapter and not Path(adapter).is_dir():
        raise HwsimError(f"{adapter}: not an adapter directory")
    name = Path(model).stem if onnx_file else Path(model).name if model not in ZOO else model
    root = Path(out) if out else Path("build") / name
    if root.exists() and not (root / "matrix.json").is_file() and any(root.iterdir()) and not force:
        raise HwsimError(f"{root} already exists and is not a hwsim matrix: pass --force to replace it, or choose "
                         "another --out")
    src = resolve_model(model) if onnx_file else None
    root.mkdir(parents=True, exist_ok=True)
    if src is not None:
        variants = [Variant("as-is", None, "as-is", matched="as-is")]
        info = {"as-is": {**asdict(variants[0]), "status": "ok", "onnx": str(src.path)}}
        phases = {"as-given": dict(shapes or {})}
        budget = None
    else:
        formats = list(DEFAULT_FORMATS if formats is None else formats)
        variants, budget = _plan(model, adapter, formats, list(base_formats or []), root, step)
        tokens = tokens or (ZOO[model].default_shapes["input_ids"][1] if model in ZOO else 16)
        info = prepare_variants(model, adapter, variants, root, tokens, seed, rtol, force, step)
        inputs = next((i["inputs"] for i in info.values() if "inputs" in i), ["input_ids"])
        phases = {"prefill": {n: (1, tokens) for n in inputs}, "decode": {n: (1, 1) for n in inputs}}
    jobs = [Job(v.id, spec.name, phase, tuple(sorted(s.items())), "" if t == spec.name else str(Path(t).resolve()))
            for v in variants for t, spec in zip(targets, specs, strict=True) for phase, s in phases.items()]
    exported = [j for j in jobs if info[j.variant].get("status") == "ok"]
    results = run_jobs(exported, {v: i["onnx"] for v, i in info.items() if "onnx" in i}, root, retry_failed=force,
                       workers=workers or os.cpu_count() or 1, runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key,
                       progress=step)
    results += [{**_entry(j, str(root)), "status": "failed", "cached": True,
                 "error": f"variant not exported: {info[j.variant]['error']}"} for j in jobs if j not in exported]
    order = {(j.variant, j.target, j.phase): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["variant"], r["target"], r["phase"])])
    matrix: dict[str, Any] = {
        "schema": MATRIX_SCHEMA, "model": {"name": name, "source": str(model), "adapter": adapter},
        "targets": [{"name": s.name, "kind": s.kind, "description": s.description, "links": s.links}
                    for s in specs],
        "phases": {p: {k: list(v) for k, v in s.items()} for p, s in phases.items()},
        "variants": list(info.values()), "matched_bytes_budget": budget,
        "jobs": [{k: v for k, v in r.items() if k != "cached"} for r in results]}
    if overhead and not onnx_file and "host" in [spec.name for spec in specs]:
        d = next((i["hidden_size"] for i in info.values() if i.get("hidden_size")), 0)
        if d:
            matrix["branch_overhead"] = _branch_overhead(root, tokens, d, step)
    return MatrixResult(root, {**matrix, "jobs": results}, _publish(root, matrix, step))


def _publish(root: Path, matrix: dict[str, Any], step: Progress) -> Path:
    """matrix.json and the report, unless both already say exactly this (an unchanged rerun writes nothing)."""
    from hwsim.report import write_report

    text = json.dumps(matrix, indent=2) + "\n"
    report = root / "report.html"
    current = root / "matrix.json"
    if current.is_file() and current.read_text() == text and report.is_file() and \
            (root / "results.json").is_file() and _report_key(root) == source_hash():
        return report
    write_atomic(current, text)
    step("writing the report")
    out = write_report(root)
    write_atomic(root / ".report-source", source_hash())
    return out


def _report_key(root: Path) -> str | None:
    try:
        return (root / ".report-source").read_text()
    except OSError:
        return None


def _cached_json(path: Path, key: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, kept in `path` under `key` and read back while the key is the same."""
    try:
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return cached["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, {"key": key, "value": value})
    return value


def _plan(model: str, adapter: str | None, formats: list[str], base_formats: list[str], root: Path,
          step: Progress) -> tuple[list[Variant], int | None]:
    """The variants (matched rank, matched bytes, base formats) and the bytes budget; cached, since finding the
    matched-bytes ranks fits every format at several ranks."""
    def compute() -> dict[str, Any]:
        from models.variants import load_adapter_for, load_base

        step("planning the variants")
        lora = load_adapter_for(load_base(model), adapter)
        extra, budget = matched_bytes_variants(lora, formats) if lora is not None and "lordba" in formats \
            else ([], None)
        return {"variants": [asdict(v) for v in plan_variants(formats, base_formats) + extra], "budget": budget}

    key = _key(MATRIX_SCHEMA, "plan", _model_files_hash(model, adapter), formats, base_formats, source_hash())
    plan = _cached_json(root / "variants" / "plan.json", key, compute)
    return [Variant(**v) for v in plan["variants"]], plan["budget"]


def _branch_overhead(root: Path, tokens: int, d: int, step: Progress) -> dict[str, Any]:
    """The r=16 branch overhead measured on this host, kept until the shape, the CPU or hwsim changes."""
    from hwsim.api import cpu_name
    from hwsim.overhead import branch_overhead

    def compute() -> dict[str, Any]:
        step(f"measuring the r=16 branch overhead at {tokens}x{d} on the host")
        return branch_overhead(tokens, d, 16, threads, rounds=5)

    threads = os.cpu_count() or 1
    key = _key("overhead", tokens, d, 16, threads, cpu_name(), source_hash())
    return _cached_json(root / "overhead.json", key, compute)


def report_single(out_dir: Path, model: str, target: str, shapes: dict[str, tuple[int, ...]]) -> Path:
    """The report of one build (an ONNX file on one target): a one-job matrix in the build directory."""
    from hwsim.report import write_report

    spec = load_target(target)
    phase = {k: list(v) for k, v in sorted(shapes.items())}
    manifest = json.loads((out_dir / "manifest.json").read_text())
    if not phase:
        phase = {i["name"]: i["shape"] for i in manifest["inputs"]}
    matrix = {"schema": MATRIX_SCHEMA, "model": {"name": manifest["model"]["name"], "source": model, "adapter": None},
              "targets": [{"name": spec.name, "kind": spec.kind, "description": spec.description,
                           "links": spec.links}],
              "phases": {"as-given": phase}, "variants": [{**asdict(Variant("as-is", None, "as-is", matched="as-is"))}],
              "matched_bytes_budget": None,
              "jobs": [{"variant": "as-is", "target": spec.name, "phase": "as-given", "shapes": [], "dir": ".",
                        "status": "ok", "cached": False}]}
    _write_json_atomic(out_dir / "matrix.json", matrix)
    return write_report(out_dir)
