"""`hwsim compile` over a matrix: format variants x targets x phases (prefill, decode with a KV cache), built
in parallel where the machine allows, under one progress display, then the comparison report.

Variants of a built-in or Hugging Face model: each adapter format on each base format at the trained rank
("matched rank"), and, with matched bytes, each format at the largest rank whose adapter fits in the bytes
of LoRDBA at the trained rank (smaller ranks are the truncated SVD of the trained adapter's dW), on each
base. Every variant is exported to ONNX once per phase (cached by a content key), with its bytes,
reconstruction and output errors and its training state measured on the way. An ONNX file is one variant,
compiled as it is.

Jobs are hwsim compiles (each cached by its own key, a deterministic failure too: hwsim/buildcache.py),
looked up before any starts. Exports and builds run in a process pool; host builds are built and verified
there but timed afterwards, together and in fresh processes (hwsim/hosttiming.py), so no measurement shares
the machine with a build. The variant plan, the exports, the host's branch-overhead measurement and the
report are cached too: an unchanged rerun writes nothing.
"""

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
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
DEFAULT_BASE_FORMATS = ("fp16", "ternary")
DEFAULT_CONTEXT = 128
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    id: str
    adapter_format: str | None  # None: no adapter format applied (an ONNX file as it is)
    base_format: str
    rank: int | None = None  # adapter rank; None: as trained
    matched: str = "rank"  # "rank", "bytes" or "as-is"
    train_steps: int = 0  # sign-form training steps of the converted adapter (models/sign_distill.py); 0: none
    head_format: str = "fp16"  # the LM head (and the embedding tied to it) under a base below fp32

    def with_head(self, head_format: str) -> "Variant":
        """The same variant with its LM head in `head_format`; a head other than fp16 is named in the id."""
        if head_format == self.head_format:
            return self
        return replace(self, id=f"{self.id}+{head_format}", head_format=head_format)


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


def plan_variants(adapter_formats: list[str], base_formats: list[str], train_steps: int = 0) -> list[Variant]:
    """Each adapter format on each base format, at the trained rank (the sign and ternary formats trained in
    sign form for `train_steps`); the matched-bytes ones are added once the budget is known."""
    return [Variant(_variant_id(f, b), f, b, train_steps=_steps(f, train_steps))
            for b in base_formats for f in adapter_formats]


def _steps(fmt: str | None, train_steps: int) -> int:
    from models.formats.adapter import TRAINABLE

    return train_steps if fmt in TRAINABLE else 0


def _adapter_bits(lora: Any, fmt: str) -> int:
    from models.peft_io import convert_adapter

    return sum(r.fitted.bits() for r in convert_adapter(lora, fmt))


def matched_bytes_variants(lora: Any, adapter_formats: list[str], base_formats: list[str],
                           train_steps: int = 0) -> tuple[list[Variant], int]:
    """Each format at the largest rank whose adapter bytes fit LoRDBA's at the trained rank (the budget), on
    each base format."""
    trained = int(lora.config["r"])
    budget = _adapter_bits(lora, "lordba")
    out = []
    for fmt in adapter_formats:
        rank = next((r for r in range(trained, 0, -1)
                     if _adapter_bits(lora if r == trained else lora.truncated(r), fmt) <= budget), 1)
        if rank != trained:
            out += [Variant(_variant_id(fmt, b, rank), fmt, b, rank, "bytes", _steps(fmt, train_steps))
                    for b in base_formats]
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
                     context: int, seed: int, rtol: float, retry_failed: bool, progress: Progress,
                     phases: tuple[str, ...] = ("prefill", "decode"), workers: int = 1) -> dict[str, dict[str, Any]]:
    """Export every variant (cached) and measure its bytes, errors and training state.

    Each variant is one ONNX file per phase (of `phases`, those the model has): prefill (`variants/ID.onnx`)
    and, for decoders, decode with a KV cache of `context` tokens (`variants/ID.decode.onnx`). A variant whose
    export fails its check (torch vs onnxruntime) is recorded with the reason, under the same key, and its
    builds are reported failed; it is retried only with `retry_failed`. Exports run in `workers` processes."""
    files = _model_files_hash(model, adapter)
    out: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Variant, str]] = []
    for v in variants:
        info_path = root / "variants" / f"{v.id}.json"
        key = _key(MATRIX_SCHEMA, files, asdict(v), seed, tokens, context, phases, rtol, source_hash())
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            failed = info.get("status") == "failed"
            exported = all(Path(e["path"]).is_file() for e in info.get("exports", {}).values())
            if info.get("key") == key and ((exported and not failed) or (failed and not retry_failed)):
                out[v.id] = info
                continue
        todo.append((v, key))
    if todo:
        progress(f"fitting and exporting {len(todo)} variants")
        from models.evaluate import reference as unquantised

        reference = unquantised(model, adapter, seed)
        args = [(model, adapter, v, root / "variants", key, reference, tokens, context, phases, seed, rtol)
                for v, key in todo]
        if workers > 1 and len(todo) > 1:
            pool_size = min(workers, len(todo))
            # each process gets its share of the cores: torch's small training ops slow down many-fold when
            # processes oversubscribe them
            threads = max(1, (os.cpu_count() or 1) // pool_size)
            with ProcessPoolExecutor(max_workers=pool_size, mp_context=get_context("spawn"),
                                     initializer=_torch_threads, initargs=(threads,)) as pool:
                futures = {pool.submit(_export_job, *a): a[2] for a in args}
                for n, fut in enumerate(as_completed(futures), 1):
                    out[futures[fut].id] = fut.result()
                    progress(f"exported {n}/{len(todo)}: {futures[fut].id}")
        else:
            for n, a in enumerate(args, 1):
                progress(f"fitting and exporting {a[2].id} ({n}/{len(todo)})")
                out[a[2].id] = _export_job(*a)
    return {v.id: out[v.id] for v in variants}


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _export_job(model: str, adapter: str | None, v: Variant, folder: Path, key: str, reference: Any,
                tokens: int, context: int, phases: tuple[str, ...], seed: int, rtol: float) -> dict[str, Any]:
    """One variant's exports and record (variants/ID.json), in a pool process or here."""
    try:
        info = _export_variant(model, adapter, v, folder, key, reference, tokens, context, phases, seed, rtol)
    except VerificationError as e:  # the export check: this variant fails, the matrix goes on
        info = {"key": key, **asdict(v), "status": "failed", "error": describe(e)}
    _write_json_atomic(folder / f"{v.id}.json", info)
    return info


def _export_variant(model: str, adapter: str | None, v: Variant, folder: Path, key: str, reference: Any,
                    tokens: int, context: int, phases: tuple[str, ...], seed: int, rtol: float) -> dict[str, Any]:
    """Fit (and train, with v.train_steps) the variant, measure its quality (the plain conversion's too, when it
    was trained), export each phase, then measure a whole-model training step."""
    from models.evaluate import quality, training_step
    from models.perplexity import corpus_tokens, perplexity_onnx
    from models.variants import (
        apply_formats,
        export_variant,
        load_adapter_for,
        load_base,
        train_adapter,
        variant_summary,
    )

    base = load_base(model)
    trained = lora = load_adapter_for(base, adapter)
    if lora is not None and v.rank:
        lora = lora.truncated(v.rank)
    report = apply_formats(base, lora, v.adapter_format if lora is not None else None, v.base_format,
                           head_format=v.head_format)
    corpus = corpus_tokens(base)
    info = {"key": key, **asdict(v), "status": "ok",
            "rank": v.rank or (int(lora.config["r"]) if lora is not None else None),
            "hidden_size": int(getattr(base.model.config, "hidden_size", 0)), "model_kind": base.kind,
            **({"perplexity_corpus": corpus[1]} if corpus else {})}
    measured = quality(base, reference, seed, corpus[0] if corpus else None)
    if lora is not None and v.train_steps:
        info["conversion"] = {**measured, "adapter_rel_error": _adapter_error(trained, report.fitted)}
        train_adapter(base, lora, report, steps=v.train_steps, seed=seed, seq=tokens)
        info["training"] = report.training
        measured = quality(base, reference, seed, corpus[0] if corpus else None)
    info.update(variant_summary(report))
    info.update(measured)
    if lora is not None and v.adapter_format:
        # against the trained adapter's dW (a truncated adapter's own dW would hide the truncation)
        info["adapter_rel_error"] = _adapter_error(trained, report.fitted)
    folder.mkdir(parents=True, exist_ok=True)
    info["exports"] = {}
    for phase in (p for p in base.phases if p in phases):
        path = folder / (f"{v.id}.onnx" if phase == "prefill" else f"{v.id}.{phase}.onnx")
        e = export_variant(base, path, force=True, seed=seed, rtol=rtol, phase=phase, context=context)
        shapes = e["inputs"] if phase == "decode" else {n: [1, tokens, *s[2:]] for n, s in e["inputs"].items()}
        info["exports"][phase] = {"path": str(path), "shapes": shapes, "check": e["check"]}
        if phase == "prefill" and corpus:
            info["perplexity_onnxruntime"] = perplexity_onnx(path, corpus[0])
    if lora is not None and v.adapter_format:
        info["training_state"] = training_step(base, lora, report, tokens, seed)
    return info


def _adapter_error(trained: Any, fitted: list[Any]) -> float:
    return float(np.mean([_rel(trained, r) for r in fitted]))


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
    deterministic one is cached in the job's directory like a build. A host build is not timed here (run_jobs
    times them all together afterwards)."""
    from hwsim.api import compile_model

    entry = _entry(job, root)
    try:
        # the matrix directory is ours: a job whose inputs changed replaces its stale build (force)
        result = compile_model(onnx, target=job.target_file or job.target, shapes=dict(job.shapes),
                               out=job.path(Path(root)), force=True, runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key,
                               record_failure=True, retry_failed=retry_failed, measure=False)
        return {**entry, "status": "ok", "cached": result.cached}
    except Exception as e:  # every failure is reported in the matrix: HwsimError, verification, TVM, qemu
        return {**entry, "status": "failed", "error": describe(e), "cached": isinstance(e, CachedFailure)}


def _entry(job: Job, root: str) -> dict[str, Any]:
    entry = {**asdict(job), "dir": str(job.path(Path(root)).relative_to(root))}
    entry.pop("target_file")
    return entry


def _lookup(job: Job, onnx: str, root: str, retry_failed: bool, runs: int, rtol: float, rpc: str | None,
            rpc_key: str | None) -> dict[str, Any] | None:
    """The job's entry when the cache answers it (a build, or a failure not to be retried), else None (also for
    a host build not yet timed): a rerun of an unchanged matrix starts no build process at all. Takes
    _run_job's arguments."""
    from hwsim.buildcache import PENDING, failure_line, lookup

    plan = _build_plan(job, onnx, root, retry_failed, runs, rtol, rpc, rpc_key)
    found = lookup(plan.out_dir, plan.key)
    if found is None or (found.get("status") == "failed" and retry_failed) or \
            PENDING in found.get("latency", {}):
        return None
    entry = _entry(job, root)
    if found.get("status") == "failed":
        return {**entry, "status": "failed", "cached": True, "error": failure_line(found)}
    return {**entry, "status": "ok", "cached": True}


def _build_plan(job: Job, onnx: str, root: str, _retry_failed: bool, runs: int, rtol: float, rpc: str | None,
                rpc_key: str | None) -> Any:
    """The job's BuildPlan (takes _run_job's arguments)."""
    from hwsim.api import plan_build

    return plan_build(onnx, target=job.target_file or job.target, shapes=dict(job.shapes), out=job.path(Path(root)),
                      runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key)


def run_jobs(jobs: list[Job], onnx: dict[tuple[str, str], str], root: Path, *, retry_failed: bool, workers: int,
             runs: int, rtol: float, rpc: str | None, rpc_key: str | None, progress: Progress) -> list[dict[str, Any]]:
    """Cache hits first, then every build in a pool of `workers` processes (host builds built and verified but
    not timed), then the host builds timed together, alone on the machine, each in fresh processes
    (hwsim/hosttiming.py)."""
    def spec(job: Job) -> Any:
        return load_target(job.target_file or job.target)

    def measured_here(job: Job) -> bool:
        s = spec(job)
        return s.kind == "cpu" and not s.tvm.mtriple and not rpc

    def args(j: Job) -> tuple:
        cpu_rpc = rpc if spec(j).kind == "cpu" else None
        return (j, onnx[(j.variant, j.phase)], str(root), retry_failed, runs, rtol, cpu_rpc,
                rpc_key if cpu_rpc else None)

    if any(measured_here(j) for j in jobs):
        from hwsim.hosttiming import passes

        passes()  # a bad HWSIM_TIMING_PASSES is an error now, not after every build
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
    built: dict[Job, dict[str, Any]] = {}
    if todo and workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_job, *args(j)): j for j in todo}
            for fut in as_completed(futures):
                built[futures[fut]] = fut.result()
                done += 1
                progress(f"built {done}/{len(jobs)}: {futures[fut].variant} on {futures[fut].target}")
    else:
        for j in todo:
            progress(f"building {done + 1}/{len(jobs)}: {j.variant} on {j.target} ({j.phase})")
            built[j] = _run_job(*args(j))
            done += 1
    timed = [j for j in todo if measured_here(j) and built[j]["status"] == "ok"]
    if timed:
        from hwsim.api import measure_pending
        from hwsim.buildcache import lookup

        pending = []
        for j in timed:
            plan = _build_plan(*args(j))
            manifest = lookup(plan.out_dir, plan.key)
            if manifest is None:  # hwsim's own source changed while the matrix ran: the build's key with it
                built[j] = {**built[j], "status": "failed",
                            "error": f"{plan.out_dir}: the build changed under the matrix before it was timed"}
            else:
                pending.append((j, plan, manifest))
        got = measure_pending([(plan, manifest) for _, plan, manifest in pending], progress=progress)
        for (j, _, _), g in zip(pending, got, strict=True):
            if isinstance(g, Exception):
                built[j] = {**built[j], "status": "failed", "error": describe(g)}
    results += built.values()
    order = {(j.variant, j.target, j.phase): i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["variant"], r["target"], r["phase"])])


@dataclass(frozen=True)
class MatrixResult:
    root: Path
    matrix: dict[str, Any]
    report: Path


def compile_matrix(model: str | None, *, adapter: str | None = None, formats: list[str] | None = None,
                   base_formats: list[str] | None = None, targets: list[str] | None = None,
                   tokens: int | None = None, context: int = DEFAULT_CONTEXT, matched_bytes: bool = False,
                   train_steps: int | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
                   out: Path | None = None, force: bool = False, workers: int | None = None, runs: int = 20,
                   seed: int = 0, rtol: float = 1e-3, rpc: str | None = None, rpc_key: str | None = None,
                   overhead: bool = True, head_format: str = "fp16", progress: Progress | None = None) -> MatrixResult:
    """Build the matrix and write the report (see the module docstring); returns where they are.

    Everything is cached by content: an unchanged rerun builds, fits, measures and writes nothing. `force`
    retries cached failures (and replaces an output directory that is not a hwsim matrix). `formats` and
    `base_formats` default to the built-in model's own choice, else DEFAULT_FORMATS x DEFAULT_BASE_FORMATS;
    `matched_bytes` adds each format at LoRDBA's adapter bytes, on each base. `train_steps`: sign-form training
    of the lordba, ternary and trit-plane adapters (None: DEFAULT_TRAIN_STEPS; 0: the plain
    conversion; a built-in model may set its own default), the plain conversion's quality recorded beside the
    trained one's. `head_format` (models.variants.HEAD_FORMATS) stores every variant's LM head, and the
    embedding tied to it, in fp16 or Q8_0 (then named in the variant's id)."""
    from hwsim.api import resolve_model
    from models.formats.adapter import DEFAULT_TRAIN_STEPS
    from models.variants import HEAD_FORMATS
    from models.zoo import DEFAULT_MODEL, ZOO

    step = progress or (lambda _m: None)
    model = model or DEFAULT_MODEL
    targets = list(targets or DEFAULT_TARGETS)
    specs = [load_target(t) for t in targets]  # unknown targets fail before any work
    if rpc:
        from codegen.rpc import check_reachable

        check_reachable(rpc)
    onnx_file = Path(model).suffix == ".onnx"
    if onnx_file and head_format != "fp16":
        raise HwsimError(f"--head {head_format} formats a model's LM head; {model} is an ONNX file, compiled as it is")
    if not onnx_file and model not in ZOO and not (Path(model) / "config.json").is_file():
        raise HwsimError(f"{model}: not an .onnx file, a built-in model ({', '.join(sorted(ZOO))}) nor a Hugging Face "
                         "model directory (no config.json)")
    if train_steps is None:
        own = ZOO[model].sign_train_steps if model in ZOO else None
        train_steps = DEFAULT_TRAIN_STEPS if own is None else own
    if train_steps < 0:
        raise HwsimError(f"--steps must be 0 or more, got {train_steps}")
    if context < 1:
        raise HwsimError(f"--context must be at least 1 past token, got {context}")
    if head_format not in HEAD_FORMATS:
        raise HwsimError(f"unknown head format '{head_format}' (known: {', '.join(HEAD_FORMATS)})")
    if head_format != "fp16" and "fp32" in (base_formats or DEFAULT_BASE_FORMATS):
        raise HwsimError(f"--head {head_format} applies to base formats below fp32; drop fp32 from --base-formats")
    if adapter and not Path(adapter).is_dir():
        raise HwsimError(f"{adapter}: not an adapter directory")
    name = Path(model).stem if onnx_file else Path(model).name if model not in ZOO else model
    root = Path(out) if out else Path("build") / name
    if root.exists() and not (root / "matrix.json").is_file() and any(root.iterdir()) and not force:
        raise HwsimError(f"{root} already exists and is not a hwsim matrix: pass --force to replace it, or choose "
                         "another --out")
    src = resolve_model(model) if onnx_file else None
    zoo = None if onnx_file else ZOO.get(model)
    root.mkdir(parents=True, exist_ok=True)
    if src is not None:
        variants = [Variant("as-is", None, "as-is", matched="as-is")]
        info = {"as-is": {**asdict(variants[0]), "status": "ok",
                          "exports": {"as-given": {"path": str(src.path), "shapes": dict(shapes or {})}}}}
        budget = None
    else:
        formats = list(formats if formats is not None else zoo.formats if zoo and zoo.formats else DEFAULT_FORMATS)
        bases = list(base_formats or DEFAULT_BASE_FORMATS)
        variants, budget = _plan(model, adapter, formats, bases, matched_bytes, train_steps, root, step)
        variants = [v.with_head(head_format) for v in variants]
        tokens = tokens or (next(iter(zoo.default_shapes.values()))[1] if zoo else 16)
        info = prepare_variants(model, adapter, variants, root, tokens, context, seed, rtol, force, step,
                                workers=workers or os.cpu_count() or 1)
    exports = next((i["exports"] for i in info.values() if "exports" in i), {"prefill": {"shapes": {}}})
    phases = {p: {k: tuple(v) for k, v in e["shapes"].items()} for p, e in exports.items()}
    jobs = [Job(v.id, spec.name, phase, tuple(sorted(s.items())), "" if t == spec.name else str(Path(t).resolve()))
            for v in variants for t, spec in zip(targets, specs, strict=True) for phase, s in phases.items()]
    exported = [j for j in jobs if info[j.variant].get("status") == "ok"]
    onnx = {(v, p): e["path"] for v, i in info.items() for p, e in i.get("exports", {}).items()}
    results = run_jobs(exported, onnx, root, retry_failed=force,
                       workers=workers or os.cpu_count() or 1, runs=runs, rtol=rtol, rpc=rpc, rpc_key=rpc_key,
                       progress=step)
    results += [{**_entry(j, str(root)), "status": "failed", "cached": True,
                 "error": f"variant not exported: {info[j.variant]['error']}"} for j in jobs if j not in exported]
    order = {(j.variant, j.target, j.phase): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["variant"], r["target"], r["phase"])])
    matrix: dict[str, Any] = {
        "schema": MATRIX_SCHEMA, "model": {"name": name, "source": str(model), "adapter": adapter,
                                           **({"scaled": dict(zoo.scaled)} if zoo and zoo.scaled else {})},
        "targets": [{"name": s.name, "kind": s.kind, "description": s.description, "links": s.links}
                    for s in specs],
        "phases": {p: {k: list(v) for k, v in s.items()} for p, s in phases.items()},
        **({"context": context} if "decode" in phases else {}),
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


def _plan(model: str, adapter: str | None, formats: list[str], base_formats: list[str], matched_bytes: bool,
          train_steps: int, root: Path, step: Progress) -> tuple[list[Variant], int | None]:
    """The variants (each adapter format on each base format, at matched rank and matched bytes) and the bytes
    budget; cached, since finding the matched-bytes ranks fits every format at several ranks."""
    def compute() -> dict[str, Any]:
        from models.variants import load_adapter_for, load_base

        step("planning the variants")
        lora = load_adapter_for(load_base(model), adapter)
        extra, budget = matched_bytes_variants(lora, formats, base_formats, train_steps) \
            if matched_bytes and lora is not None and "lordba" in formats else ([], None)
        planned = plan_variants(formats, base_formats, train_steps) + extra
        planned.sort(key=lambda v: (base_formats.index(v.base_format), v.matched != "rank",
                                    formats.index(v.adapter_format)))
        return {"variants": [asdict(v) for v in planned], "budget": budget}

    key = _key(MATRIX_SCHEMA, "plan", _model_files_hash(model, adapter), formats, base_formats, matched_bytes,
               train_steps, source_hash())
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
