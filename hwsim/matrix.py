"""`hwsim compile` over a matrix: format variants x targets x phases (prefill, decode), built in parallel
where the machine allows, under one progress display, then the comparison report.

Variants of a built-in or Hugging Face model: each adapter format at the trained rank ("matched rank"),
and, for comparisons at matched adapter bytes, each format at the largest rank whose adapter fits in the
bytes of LoRDBA at the trained rank (smaller ranks are the truncated SVD of the trained adapter's dW);
each base format with the fp16 LoRA adapter. Every variant is exported to ONNX once (cached by a content
key), with its bytes, reconstruction and output errors and its training state measured on the way. An
ONNX file is one variant, compiled as it is.

Jobs are hwsim compiles (each cached by its own key). Builds that measure nothing here (cross-compiled,
CUDA, simulated) run in a process pool; the host builds, which are timed, run one at a time afterwards,
so no measurement shares the machine with a build.
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
from hwsim.errors import HwsimError
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
                     seed: int, progress: Progress) -> dict[str, dict[str, Any]]:
    """Export every variant (cached) and measure its bytes, errors and training state."""
    import torch

    from models.peft_io import convert_adapter
    from models.sign_training import adapter_training_state
    from models.variants import apply_formats, export_variant, load_adapter_for, load_base, variant_summary

    files = _model_files_hash(model, adapter)
    out: dict[str, dict[str, Any]] = {}
    reference = None
    for v in variants:
        path = root / "variants" / f"{v.id}.onnx"
        info_path = path.with_suffix(".json")
        key = _key(MATRIX_SCHEMA, files, asdict(v), seed, tokens, source_hash())
        if info_path.is_file() and path.is_file():
            info = json.loads(info_path.read_text())
            if info.get("key") == key:
                out[v.id] = info
                continue
        progress(f"fitting and exporting {v.id}")
        if reference is None:
            base = load_base(model)
            apply_formats(base, load_adapter_for(base, adapter), "reference", "fp32")
            with torch.no_grad():
                reference = base.wrapper()(*base.inputs(seed)).numpy()
        base = load_base(model)
        trained = lora = load_adapter_for(base, adapter)
        if lora is not None and v.rank:
            lora = lora.truncated(v.rank)
        report = apply_formats(base, lora, v.adapter_format if lora is not None else None, v.base_format)
        with torch.no_grad():
            got = base.wrapper()(*base.inputs(seed)).numpy()
        info = {"key": key, **asdict(v), **variant_summary(report),
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
        export_variant(base, path, force=True, seed=seed)
        info["onnx"] = str(path)
        _write_json_atomic(info_path, info)
        out[v.id] = info
    return out


def _rel(trained: Any, fitted: Any) -> float:
    """||dW - dW_hat|| / ||dW|| of one module, dW the trained adapter's (fitted: a ModuleResult)."""
    a, b = trained.modules[fitted.name]
    dw = trained.scaling(fitted.name) * b.astype(np.float64) @ a.astype(np.float64)
    return float(np.linalg.norm(dw - fitted.fitted.reconstruct()) / np.linalg.norm(dw))


def _write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def _run_job(job: Job, onnx: str, root: str, force: bool, runs: int, rpc: str | None,
             rpc_key: str | None) -> dict[str, Any]:
    """One compile; failures are recorded, not raised (a failed target must not stop the matrix)."""
    from hwsim.api import compile_model

    entry = {**asdict(job), "dir": str(job.path(Path(root)).relative_to(root))}
    entry.pop("target_file")
    try:
        result = compile_model(onnx, target=job.target_file or job.target, shapes=dict(job.shapes),
                               out=job.path(Path(root)),
                               force=force, runs=runs, rpc=rpc, rpc_key=rpc_key)
        return {**entry, "status": "ok", "cached": result.cached}
    except Exception as e:  # every failure is reported in the matrix: HwsimError, verification, TVM, qemu
        return {**entry, "status": "failed", "error": describe(e)}


def describe(e: BaseException) -> str:
    """One line: the exception's type and first line, or where it was raised when it says nothing."""
    import traceback

    text = str(e).strip().splitlines()
    if text:
        return f"{type(e).__name__}: {text[0]}"[:500]
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    return f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno}" if frame else type(e).__name__


def run_jobs(jobs: list[Job], onnx: dict[str, str], root: Path, *, force: bool, workers: int, runs: int,
             rpc: str | None, rpc_key: str | None, progress: Progress) -> list[dict[str, Any]]:
    """Unmeasured builds in a pool of `workers` processes, then the timed host builds one by one."""
    def spec(job: Job) -> Any:
        return load_target(job.target_file or job.target)

    def measured_here(job: Job) -> bool:
        s = spec(job)
        return s.kind == "cpu" and not s.tvm.mtriple and not rpc

    pooled = [j for j in jobs if not measured_here(j)]
    serial = [j for j in jobs if measured_here(j)]
    results: list[dict[str, Any]] = []

    def args(j: Job) -> tuple:
        cpu_rpc = rpc if spec(j).kind == "cpu" else None
        return j, onnx[j.variant], str(root), force, runs, cpu_rpc, rpc_key if cpu_rpc else None

    done = 0
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
                   seed: int = 0, rpc: str | None = None, rpc_key: str | None = None,
                   overhead: bool = True, progress: Progress | None = None) -> MatrixResult:
    """Build the matrix and write the report (see the module docstring); returns where they are."""
    from hwsim.api import resolve_model
    from hwsim.report import write_report
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
        info = {"as-is": {**asdict(variants[0]), "onnx": str(src.path)}}
        phases = {"as-given": dict(shapes or {})}
        budget = None
    else:
        formats = list(DEFAULT_FORMATS if formats is None else formats)
        base_formats = list(base_formats or [])
        variants = plan_variants(formats, base_formats)
        from models.variants import load_adapter_for, load_base

        lora = load_adapter_for(load_base(model), adapter)
        extra, budget = matched_bytes_variants(lora, formats) if lora is not None and "lordba" in formats \
            else ([], None)
        variants += extra
        tokens = tokens or (ZOO[model].default_shapes["input_ids"][1] if model in ZOO else 16)
        info = prepare_variants(model, adapter, variants, root, tokens, seed, step)
        inputs = next(iter(info.values()))["inputs"]
        phases = {"prefill": {n: (1, tokens) for n in inputs}, "decode": {n: (1, 1) for n in inputs}}
    jobs = [Job(v.id, spec.name, phase, tuple(sorted(s.items())), "" if t == spec.name else str(Path(t).resolve()))
            for v in variants for t, spec in zip(targets, specs, strict=True) for phase, s in phases.items()]
    # the matrix directory is ours: a job whose inputs changed replaces its stale build
    results = run_jobs(jobs, {v: i["onnx"] for v, i in info.items()}, root, force=True,
                       workers=workers or os.cpu_count() or 1, runs=runs, rpc=rpc, rpc_key=rpc_key, progress=step)
    matrix: dict[str, Any] = {
        "schema": MATRIX_SCHEMA, "model": {"name": name, "source": str(model), "adapter": adapter},
        "targets": [{"name": s.name, "kind": s.kind, "description": s.description, "links": s.links}
                    for s in specs],
        "phases": {p: {k: list(v) for k, v in s.items()} for p, s in phases.items()},
        "variants": list(info.values()), "matched_bytes_budget": budget, "jobs": results}
    if overhead and not onnx_file and "host" in [spec.name for spec in specs]:
        from hwsim.overhead import branch_overhead

        d = next(iter(info.values())).get("hidden_size") or 0
        if d:
            step(f"measuring the r=16 branch overhead at {tokens}x{d} on the host")
            matrix["branch_overhead"] = branch_overhead(tokens, d, 16, os.cpu_count() or 1, rounds=5)
    _write_json_atomic(root / "matrix.json", matrix)
    step("writing the report")
    return MatrixResult(root, matrix, write_report(root))


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
