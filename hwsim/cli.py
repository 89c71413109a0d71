"""The `hwsim` command: a thin layer over `hwsim.api` that parses options and prints results.

Exit codes: 0 success, 1 a built artifact failed verification, 2 bad input (one line on stderr).
"""

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hwsim.errors import HwsimError, VerificationError
from hwsim.matrix import DEFAULT_BASE_FORMATS, DEFAULT_CONTEXT, DEFAULT_FORMATS, DEFAULT_TARGETS
from models.formats.adapter import DEFAULT_TRAIN_STEPS

err_console = Console(stderr=True)


def _console() -> Console:
    """stdout console; wide when piped, so tables are not truncated to 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _shapes(specs: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from hwsim.frontend.reader import parse_shape_option

    return dict(parse_shape_option(s) for s in specs)


class _Cli(click.Group):
    """Turns hwsim's error types into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HwsimError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except VerificationError as e:
            err_console.print(f"[bold red]verification failed:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(1)


@click.group(cls=_Cli)
@click.version_option(package_name="hwsim")
def main() -> None:
    """hwsim: what does this low-bit format cost on that chip?

    Compile ONNX models (or built-in ones) through hwsim's graph IR to TVM-built artifacts, verified
    against onnxruntime and measured. Start with `hwsim compile`.
    """


_ADAPTER_HELP = "PEFT LoRA adapter directory [default: the built-in model's trained adapter]"
_SHAPE_HELP = ("fix an input's shape, e.g. --shape input_ids=1x128 (repeatable); needed for dynamic dims "
               "of ONNX files, optional for built-in models")


def _csv(values: tuple[str, ...]) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [x for v in values for x in v.split(",") if x]


@main.command()
@click.argument("model", required=False)
@click.option("--target", "targets", multiple=True, metavar="TARGET",
              help="target name (see targets/) or a .toml file; repeatable or comma-separated "
                   f"[default: {','.join(DEFAULT_TARGETS)}; host for an .onnx file]")
@click.option("--formats", help=f"adapter formats to compare [default: {','.join(DEFAULT_FORMATS)}]")
@click.option("--base-formats", help="base-weight formats, each crossed with every adapter format (fp32 = the "
                                     "model's own weights, fp16, dbf, mdbf, ternary, tritplane) "
                                     f"[default: {','.join(DEFAULT_BASE_FORMATS)}]")
@click.option("--adapter", type=click.Path(path_type=Path), help=_ADAPTER_HELP)
@click.option("--tokens", type=int, help="prefill tokens [default: the model's default sequence length]")
@click.option("--matched-bytes", is_flag=True,
              help="also build each adapter format at the largest rank whose adapter fits in LoRDBA's bytes at the "
                   "trained rank, on each base (a second set of variants: about twice the builds)")
@click.option("--context", type=int, default=DEFAULT_CONTEXT, show_default=True,
              help="decode: past tokens in the KV cache the new token attends to")
@click.option("--train/--no-train", default=True, show_default=True,
              help="train the lordba, ternary and tritplane adapters in sign form (distilled from the fp LoRA's "
                   "outputs) before building them; --no-train builds the plain conversions. Either way the report "
                   "shows the plain conversion's accuracy")
@click.option("--steps", type=int, help=f"sign-form training steps [default: {DEFAULT_TRAIN_STEPS}; smollm2-135m 50, "
                                           "llama2-7b-block 0]")
@click.option("--shape", "shape", multiple=True, metavar="NAME=DIMS", help=_SHAPE_HELP)
@click.option("--out", type=click.Path(path_type=Path),
              help="output directory [default: build/MODEL, or build/MODEL/TARGET for one .onnx build]")
@click.option("--force", is_flag=True, help="retry builds that failed before (a failure is cached like a build), "
                                            "and replace an existing output directory that is not a hwsim build (an "
                                            "unchanged build is always reused, a changed one always rebuilt)")
@click.option("--jobs", type=int, help="parallel build processes [default: the CPU count]")
@click.option("--seed", default=0, show_default=True, help="seed of the random verification inputs")
@click.option("--rtol", default=1e-3, show_default=True,
              help="fp32 budget of |artifact - reference| / max|reference| per output; fp16 ops on the path add "
                   "twice their measured rounding effect (see the manifest's verification.tolerance_rule)")
@click.option("--runs", default=20, show_default=True,
              help="minimum timed runs in all; a host build is timed in 3 rounds in each of 6 fresh processes "
                   "($HWSIM_TIMING_PASSES), beside onnxruntime, and its figure is the quietest round's median")
@click.option("--rpc", metavar="HOST:PORT",
              help="also verify and time CPU builds on a device running `python -m tvm.exec.rpc_server` "
                   "(or on a tracker's device, with --rpc-key)")
@click.option("--rpc-key", metavar="KEY", help="device key to request from the RPC tracker at --rpc")
@click.option("--head", "head_format", type=click.Choice(["fp16", "q8_0"]), default="fp16", show_default=True,
              help="the LM head (and the input embedding tied to it) under base formats below fp32: fp16, or Q8_0 "
                   "(int8 weights with an fp16 scale per 32, as llama.cpp's TQ2_0 and Q4_0 files of SmolLM2 store "
                   "it; run as int8 dot products on the head's input quantized per 32 values)")
@click.option("--json", "as_json", is_flag=True,
              help="print the manifest (one build) or results.json (a matrix) instead of a summary")
def compile(model: str | None, targets: tuple[str, ...], formats: str | None, base_formats: str | None,
            adapter: Path | None, tokens: int | None, matched_bytes: bool, context: int, train: bool,
            steps: int | None, shape: tuple[str, ...], out: Path | None, force: bool, jobs: int | None, seed: int,
            rtol: float, runs: int, rpc: str | None, rpc_key: str | None, head_format: str, as_json: bool) -> None:
    """Compile MODEL for the targets, verify every build, and write a comparison report.

    MODEL is a built-in model (default: tiny-llama), a Hugging Face model directory (config + safetensors,
    with --adapter PEFT_DIR) or an .onnx file. A built-in or Hugging Face model builds a matrix: each adapter
    format at the trained rank (and, with --matched-bytes, at LoRDBA's adapter bytes), on each --base-formats
    base, x each target x prefill (--tokens) and decode (one token attending to a KV cache of --context past
    tokens; encoders have no decode); the variants are fitted and exported to ONNX once, the builds run in
    parallel (--jobs), and the host builds are then timed one at a time, alone. An .onnx file is
    compiled as it is, one build per target. Every run ends with report.html, report.md and results.json
    (`hwsim report DIR` regenerates them); a failed build is reported, not fatal.

    Each build imports the model into the IR, builds it with TVM, verifies the artifact against onnxruntime
    on seeded random inputs and measures or estimates its latency, each figure marked measured, simulated or
    estimated. Host builds are measured beside onnxruntime. ARM targets (cortex-a76, cortex-a72, cortex-a55)
    are cross-compiled and verified under qemu-aarch64 (`hwsim setup` installs the toolchain); their latency
    is a roofline estimate unless --rpc measures it on a board. GPU targets (nvidia-h100, nvidia-a100,
    jetson-orin) are built for CUDA and compiled by the local nvcc to PTX and cubin (no GPU needed), and run,
    verified and timed where a GPU is present. Accelerator targets (sacc-32x32, systolic-fp16-32x32) are
    lowered to an instruction stream (program.txt, program.bin), simulated cycle by cycle and run
    functionally in the simulated order, which must match onnxruntime.
    """
    from hwsim.api import compile_model
    from hwsim.matrix import compile_matrix, report_single

    if steps is not None and not train:
        raise HwsimError("--steps sets sign-form training, which --no-train turns off")
    target_list = _csv(targets)
    single = model is not None and Path(model).suffix == ".onnx" and len(target_list) <= 1
    if single and head_format != "fp16":
        raise HwsimError(f"--head {head_format} formats a model's LM head; {model} is an ONNX file, compiled as it is")
    with err_console.status("starting", spinner="dots") as status:
        def progress(msg: str) -> None:
            status.update(msg + " ...")

        if single:
            target = target_list[0] if target_list else "host"
            result = compile_model(model, target=target, shapes=_shapes(shape), out=out, force=force, seed=seed,
                                   rtol=rtol, runs=runs, rpc=rpc, rpc_key=rpc_key, progress=progress)
            progress("writing the report")
            report = report_single(result.out_dir, model, target, _shapes(shape))
        else:
            matrix = compile_matrix(model, adapter=str(adapter) if adapter else None,
                                    formats=_csv((formats,)) if formats is not None else None,
                                    base_formats=_csv((base_formats,)) if base_formats else None,
                                    targets=target_list or None, tokens=tokens, context=context,
                                    matched_bytes=matched_bytes, train_steps=steps if train else 0,
                                    shapes=_shapes(shape), out=out, force=force, workers=jobs, runs=runs, seed=seed,
                                    rtol=rtol, rpc=rpc, rpc_key=rpc_key, head_format=head_format,
                                    progress=progress)
            report = matrix.report
    if as_json:
        click.echo((report.parent / "results.json").read_text() if not single else
                   json.dumps(result.manifest, indent=2, sort_keys=True))
        return
    console = _console()
    if single:
        _print_build(console, result)
    else:
        _print_matrix(console, matrix)
    console.print(f"report: {report}", highlight=False)


def _print_build(console: Console, result: Any) -> None:
    m = result.manifest
    table = Table(title=f"{m['model']['name']} on {m['target']['name']}" + (" (cached)" if result.cached else ""))
    table.add_column("output")
    table.add_column("max abs err", justify="right")
    table.add_column("rel err", justify="right")
    for r in m["verification"]["outputs"]:
        table.add_row(r["name"], f"{r['max_abs_err']:.2e}", f"{r['max_rel_err']:.2e}")
    if m["verification"]["passed"] is None:
        console.print(f"not verified: {m['verification']['not_run']}", highlight=False)
    else:
        console.print(table)
    for line in _summary(m, result.out_dir):
        console.print(line, highlight=False)


def _print_matrix(console: Console, matrix: Any) -> None:
    from hwsim.report.collect import primary

    results = json.loads((matrix.root / "results.json").read_text())
    phases = list(results["phases"])
    table = Table(title=f"{results['model']['name']}: latency per variant and target "
                        "([M] measured, [S] simulated, [E] estimated)")
    table.add_column("variant")
    for t in results["targets"]:
        for p in phases:
            table.add_column(f"{t['name']} {p}", justify="right")
    cells = {(c["variant"], c["target"]): c for c in results["cells"]}
    tag = {"measured": "M", "simulated": "S", "estimated": "E"}
    for v in results["variants"]:
        row = [v["id"]]
        for t in results["targets"]:
            for p in phases:
                c = cells.get((v["id"], t["name"]))
                best = primary(c["latency"].get(p, [])) if c else None
                row.append(f"{best['value']:.3g} ms [{tag[best['provenance']]}]" if best else "failed")
        table.add_row(*row)
    console.print(table)
    failed = [j for j in matrix.matrix["jobs"] if j["status"] != "ok"]
    cached = sum(1 for j in matrix.matrix["jobs"] if j.get("cached"))
    unverified = [j for j in matrix.matrix["jobs"] if j["status"] == "ok" and json.loads(
        (matrix.root / j["dir"] / "manifest.json").read_text())["verification"]["passed"] is None]
    console.print(f"{len(matrix.matrix['jobs'])} builds in {matrix.root} ({cached} cached, {len(failed)} failed)",
                  highlight=False)
    if unverified:
        console.print(f"{len(matrix.matrix['jobs']) - len(failed) - len(unverified)} verified; {len(unverified)} "
                      f"built but not run (no device here: {', '.join(sorted({j['target'] for j in unverified}))})",
                      highlight=False)
    for j in failed:
        console.print(f"failed: {j['variant']} on {j['target']} ({j['phase']}): {j['error']}", highlight=False)


def _summary(m: dict, out_dir: Path) -> list[str]:
    """The latency lines (each with its provenance) and where the artifacts are."""
    lat, lines = m["latency"], []
    if "emulation" in m:
        lines.append(f"verified under qemu-aarch64 ({m['emulation']['note'].split(': ', 1)[1]})")
    if "tvm" in lat:
        line = f"latency (measured, {lat['tvm']['device']}): TVM {lat['tvm']['median_ms']:.3f} ms"
        if "onnxruntime" in lat:
            line += f", onnxruntime {lat['onnxruntime']['median_ms']:.3f} ms"
        lines.append(line + " (median)")
    elif "simulated" in lat:
        sim = m["simulation"]
        util = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sim["utilisation"].items())
        lines.append(f"latency (simulated, {sim['model']}): {sim['latency_ms']:.4f} ms = {sim['cycles']} cycles at "
                     f"{sim['clock_mhz']:g} MHz; energy {sim['energy_uj']:.1f} uJ; array utilisation {util}; "
                     f"simulated in {sim['simulator_seconds']:.2f} s")
    elif m["target"]["kind"] == "gpu":
        lines.append("latency: not measured (no GPU here)")
    else:
        lines.append("latency: not measured (no device for this target here; pass --rpc HOST:PORT of a board)")
    if "roofline" in lat:
        est = lat["roofline"]
        line = f"latency (estimated, {est['model']}): {est['median_ms']:.3f} ms"
        if est["launches"]:
            line += f" ({est['kernels_ms']:.3f} ms kernels + {est['launches']} launches)"
        if "measured_over_estimated" in lat:
            line += f"; measured / estimated = {lat['measured_over_estimated']:.2f}"
        lines.append(line)
    if "estimates" in m:
        est = m["estimates"]["loops"]
        worst = max(est["loops"], key=lambda r: r["cycles_per_iteration"], default=None)
        if worst:
            lines.append(f"estimated ({est['model']}): {len(est['loops'])} kernels' inner loops, heaviest "
                         f"{worst['cycles_per_iteration']} cycles/iteration in {worst['function']}")
    arts = m["artifacts"]
    if "program" in arts:
        lines.append(f"verified program: {out_dir / arts['program']['file']} (text: {arts['program_text']['file']})")
    else:
        verified = "artifact" if m["verification"]["passed"] is None else "verified artifact"
        lines.append(f"{verified}: {out_dir / arts['library']['file']}")
    if "ptx" in arts:
        lines.append(f"CUDA source, PTX and cubin for {m['target']['arch']}: "
                     f"{', '.join(arts[k]['file'] for k in ('cuda_source', 'ptx', 'cubin'))}")
    return lines


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="write the report files here [default: BUILD_DIR]")
@click.option("--screenshot", type=click.Path(path_type=Path), metavar="PNG",
              help="also render the top of report.html to PNG with headless Chromium (`hwsim setup` installs it)")
def report(build_dir: Path, out: Path | None, screenshot: Path | None) -> None:
    """Regenerate the report of BUILD_DIR (report.html, report.md, results.json, plots/) from its manifests,
    without rebuilding anything."""
    from hwsim.report import write_report

    path = write_report(build_dir, out)
    click.echo(f"report: {path}")
    if screenshot:
        from hwsim.report.browser import screenshot as shoot

        click.echo(f"screenshot: {shoot(path, screenshot)}")


@main.command()
@click.argument("spec")
@click.option("--out", type=click.Path(path_type=Path), help="output directory [default: build/sweeps/SPEC]")
@click.option("--jobs", type=int, help="local worker processes [default: the CPU count]")
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="run the points on this Dask distributed cluster")
@click.option("--force", is_flag=True, help="use an existing output directory that is not a hwsim sweep")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON instead of a summary")
def sweep(spec: str, out: Path | None, jobs: int | None, scheduler: str | None, force: bool, as_json: bool) -> None:
    """Sweep accelerator configurations x adapter formats and ranks (SPEC: a .toml file, or a built-in sweep
    in targets/sweeps/, e.g. sacc-64).

    Each point lowers the variant to the configured accelerator, simulates it and (with verify) runs it
    functionally against the interpreter. Points run on --jobs local processes or, with --scheduler, on a
    Dask cluster; each finished point is committed to points.sqlite in the output directory, so a killed
    sweep, rerun, skips what finished. Ends with report.html / report.md / results.json: every point, the
    Pareto-optimal ones per format (latency, energy, area proxy) and the failures.
    """
    from hwsim.sweep import run_sweep

    with err_console.status("starting", spinner="dots") as status:
        result = run_sweep(Path(spec) if spec.endswith(".toml") else spec, out=out, jobs=jobs, scheduler=scheduler,
                           force=force, progress=lambda m: status.update(m + " ..."))
    if as_json:
        click.echo((result.root / "results.json").read_text())
        return
    ok = [r for r in result.rows if r["status"] == "ok"]
    run = result.run
    console = _console()
    console.print(f"{len(result.rows)} points ({len(ok)} ok, {len(result.rows) - len(ok)} failed): computed "
                  f"{run['computed']} ({run['executor']}, {run['points_per_second']:.3g} points/s, "
                  f"{run['steady_points_per_second']:.3g} after start-up), skipped "
                  f"{run['skipped']} already done", highlight=False)
    console.print(f"report: {result.report}", highlight=False)


@main.command()
@click.option("--check", is_flag=True, help="only report what is missing; install nothing")
def setup(check: bool) -> None:
    """Install the cross toolchain ARM targets need (aarch64 g++, qemu-aarch64, llvm-mca-19) and Chromium.

    Chromium and ChromeDriver render reports (hwsim report --screenshot, the report's browser test).
    Missing Debian packages are installed with apt-get (as root, or with passwordless sudo); then the
    aarch64 TVM runtime matching the installed TVM is fetched from PyPI and hwsim-runner is built, both
    cached under ~/.cache/hwsim/toolchains (or $HWSIM_TOOLCHAIN_DIR). Safe to rerun.
    """
    from codegen.toolchain import setup as run_setup

    with err_console.status("checking the toolchain", spinner="dots") as status:
        done = run_setup(install=not check, progress=lambda msg: status.update(msg + " ..."))
    for line in done:
        click.echo(line)


@main.command()
@click.argument("model", required=False)
@click.option("--shape", "shape", multiple=True, metavar="NAME=DIMS", help=_SHAPE_HELP)
@click.option("--top", default=10, show_default=True, help="how many of the largest tensors to list")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def inspect(model: str | None, shape: tuple[str, ...], top: int, as_json: bool) -> None:
    """Summarise MODEL's IR: ops by type, parameter bytes by dtype, largest tensors."""
    from dataclasses import asdict

    from hwsim.api import inspect_model

    report = inspect_model(model, shapes=_shapes(shape), top=top)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    console = _console()
    console.print(f"[bold]{report.name}[/]: {report.nodes} nodes; inputs "
                  + ", ".join(f"{i['name']}: {i['type']}" for i in report.inputs), highlight=False)
    ops = Table(title="ops by type")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in report.ops.items():
        ops.add_row(op, str(n))
    params = Table(title=f"weight bytes by format (peak activations: {report.peak_activation_bytes:,} bytes)")
    params.add_column("format / dtype")
    params.add_column("bytes", justify="right")
    for fmt, n in report.weight_bytes_by_format.items():
        params.add_row(fmt, f"{n:,}")
    big = Table(title=f"largest {len(report.largest)} tensors")
    for col in ("name", "type", "bytes", "kind"):
        big.add_column(col, justify="right" if col == "bytes" else "left")
    for t in report.largest:
        big.add_row(t["name"], t["type"], f"{t['bytes']:,}", t["kind"])
    tables = [ops, params, big]
    if report.layers:
        layers = Table(title=f"format layers ({sum(x['lowered'] for x in report.layers)} of {len(report.layers)} "
                             "lowered to accumulate ops)")
        for col in ("node", "op", "status"):
            layers.add_column(col)
        for x in report.layers:
            layers.add_row(x["name"], x["op"], x["status"])
        tables.append(layers)
    for t in tables:
        console.print(t)


@main.command()
@click.argument("adapter")
@click.option("--format", "fmt", required=True, metavar="FORMAT",
              help="lora-fp16 | lordba | ternary | tritplane (ternary/tritplane apply to each LoRA factor)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory for the converted adapter")
@click.option("--force", is_flag=True, help="replace an existing output directory")
@click.option("--layout", type=click.Choice(["channel", "rank"]), default=None,
              help="LoRDBA scale layout: channel (u, mu, v; default) or rank (mu only)")
@click.option("--packing", type=click.Choice(["i2", "tq1_0"]), default=None,
              help="trit packing for ternary/tritplane: i2 (2 bpw; default) or tq1_0 (base-3)")
@click.option("--peft-twin", is_flag=True, help="also write the equivalent plain PEFT LoRA (dense fp32, the oracle)")
@click.option("--train/--no-train", default=False, show_default=True,
              help="train the conversion in sign form (lordba, ternary, tritplane): latent factors and scales through "
                   "the straight-through quantiser, distilled from the fp adapter's outputs inside the base model")
@click.option("--steps", type=int, help=f"sign-form training steps [default: {DEFAULT_TRAIN_STEPS}; smollm2-135m 50, "
                                           "llama2-7b-block 0]")
@click.option("--model", "base_model", help="the base model to train in: a built-in name or a Hugging Face model "
                                             "directory [default: ADAPTER, when it is a built-in model]")
@click.option("--base-format", default="fp32", show_default=True,
              help="the base's format during training (the one the adapter will be deployed on)")
@click.option("--json", "as_json", is_flag=True, help="print the conversion report as JSON")
def convert(adapter: str, fmt: str, out: Path, force: bool, layout: str | None, packing: str | None,
            peft_twin: bool, train: bool, steps: int | None, base_model: str | None, base_format: str,
            as_json: bool) -> None:
    """Convert a PEFT LoRA ADAPTER directory (or a built-in model's adapter) to FORMAT.

    Writes the compact adapter only: hwsim_adapter.safetensors (packed signs/trits, fp16 scales) and
    hwsim_adapter.json (the source PEFT config, packed bytes and reconstruction errors per module, and
    the bytes of each file written vs the source adapter file). --peft-twin adds the equivalent plain
    PEFT LoRA (fp32, the correctness oracle), for tools that load PEFT adapters.
    """
    from hwsim.formats_api import convert_adapter_dir

    opts = {k: v for k, v in (("layout", layout), ("packing", packing)) if v is not None}
    if (layout and fmt != "lordba") or (packing and fmt not in ("ternary", "tritplane")):
        raise HwsimError(f"--layout applies to lordba, --packing to ternary/tritplane, not to '{fmt}'")
    if not train and (steps is not None or base_model):
        raise HwsimError("--steps and --model set sign-form training: add --train")
    if steps is not None and steps < 1:
        raise HwsimError(f"--steps must be at least 1, got {steps}")
    train_steps = (steps or DEFAULT_TRAIN_STEPS) if train else 0
    with err_console.status("converting", spinner="dots") as status:
        report = convert_adapter_dir(adapter, fmt, out, force=force, peft_twin=peft_twin, train_steps=train_steps,
                                     model=base_model, base_format=base_format,
                                     progress=lambda m: status.update(m), **opts)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    table = Table(title=f"{fmt}: {len(report['modules'])} modules")
    for col in ("module", "shape", "packed bytes", "vs fp16 LoRA", "rel. error", "rho A / B"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for m in report["modules"]:
        d = m["details"]
        rho = f"{d['rho_A']:.3f} / {d['rho_B']:.3f}" if "rho_A" in d else "-"
        table.add_row(m["module"], "x".join(map(str, m["shape"])), f"{m['bits'] // 8:,}",
                      f"{m['lora_fp16_bits'] / m['bits']:.2f}x", f"{m['rel_error']:.4f}", rho)
    table.add_row("total packed payload", "", f"{report['adapter_bytes']:,}",
                  f"{report['ratio_vs_lora_fp16']:.2f}x", "", "")
    _console().print(table)
    t = report.get("training")
    if t:
        click.echo(f"trained in sign form: {t['steps']} steps in {t['model']} ({t['base_format']} base), held-out "
                   f"output loss {t['held_out_loss_before']:.4f} -> {t['held_out_loss_after']:.4f}")
    click.echo(f"converted adapter: {out}")
    _echo_files(report)


def _echo_files(report: dict[str, Any]) -> None:
    """File bytes on disk (not the packed payload above): what shipping the directory costs."""
    width = max(map(len, report["files"]))
    for name, size in report["files"].items():
        click.echo(f"file  {name:<{width}}  {size:>12,} bytes")
    line = f"total {'written':<{width}}  {report['written_bytes']:>12,} bytes"
    src = report.get("source_bytes")
    if src:
        line += f"  ({report['written_bytes'] / src:.2f}x the source adapter_model.safetensors, {src:,} bytes)"
    click.echo(line)


@main.command()
@click.argument("model")
@click.option("--adapter", type=click.Path(path_type=Path), help=_ADAPTER_HELP)
@click.option("--format", "fmt", default="lora-fp16", show_default=True,
              help="adapter format: lora-fp16 | lordba | ternary | tritplane")
@click.option("--base-format", default="fp32", show_default=True,
              help="base-weight format: fp32 | fp16 | dbf | mdbf | ternary | tritplane")
@click.option("--bpw", type=float, default=None, help="bits per weight budget for dbf/mdbf [default: 1.0]")
@click.option("--iters", type=int, default=None, help="dbf/mdbf: outer ADMM iterations of the fit [default: 20]")
@click.option("--importance", type=click.Choice(["none", "calibration"]), default=None,
              help="dbf/mdbf: weight each layer's input channels by their RMS on the model's held-in task inputs "
                   "(calibration) or not [default: none]")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the .onnx file to write")
@click.option("--force", is_flag=True, help="replace an existing file")
@click.option("--json", "as_json", is_flag=True, help="print the export report as JSON")
def export(model: str, adapter: Path | None, fmt: str, base_format: str, bpw: float | None, iters: int | None,
           importance: str | None, out: Path, force: bool, as_json: bool) -> None:
    """Export MODEL (a built-in name or a Hugging Face model directory) with formats applied to ONNX.

    Signs and trits are stored packed as uint8 initializers; each format layer is one ai.hwsim op with a
    model-local function body, so stock onnxruntime runs the file (checked against torch before writing).
    """
    from hwsim.formats_api import export_model

    with err_console.status("exporting", spinner="dots") as status:
        report = export_model(model, adapter=adapter, adapter_format=fmt, base_format=base_format, bpw=bpw,
                              iters=iters, importance=importance, out=out, force=force,
                              progress=lambda m: status.update(m))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_variants([report["variant"]])
    e = report["export"]
    click.echo(f"wrote {e['path']} ({e['bytes']:,} bytes; ai.hwsim ops: {', '.join(e['hwsim_ops']) or 'none'}; "
               f"onnxruntime vs torch: {e['onnxruntime_vs_torch_rel_err']:.1e})")


@main.command()
@click.argument("model")
@click.option("--adapter", type=click.Path(path_type=Path), help=_ADAPTER_HELP)
@click.option("--formats", default="lora-fp16,lordba,ternary,tritplane", show_default=True,
              help="adapter formats to compare (each with an fp32 base)")
@click.option("--base-formats", default="fp16,dbf,mdbf,ternary,tritplane", show_default=True,
              help="base-weight formats to compare (each with the fp16 LoRA adapter); '' for none")
@click.option("--bpw", type=float, default=None, help="bits per weight budget for dbf/mdbf [default: 1.0]")
@click.option("--iters", type=int, default=None, help="dbf/mdbf: outer ADMM iterations of the fit [default: 20]")
@click.option("--importance", type=click.Choice(["none", "calibration"]), default=None,
              help="dbf/mdbf: weight each layer's input channels by their RMS on the model's held-in task inputs "
                   "(calibration) or not [default: none]")
@click.option("--head", "head_format", type=click.Choice(["fp16", "q8_0"]), default="fp16", show_default=True,
              help="the LM head (and the embedding tied to it) under the base formats: fp16 or Q8_0")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def formats(model: str, adapter: Path | None, formats: str, base_formats: str, bpw: float | None,
            iters: int | None, importance: str | None, head_format: str, as_json: bool) -> None:
    """Compare formats on MODEL: bytes vs fp16, reconstruction error, output error on held-in inputs.

    Output errors are relative to the unquantised model (fp32 base + the trained adapter in fp32);
    for embedding models the mean cosine similarity to its embeddings is shown too.
    """
    from hwsim.formats_api import compare_formats

    variants = [(f, "fp32") for f in formats.split(",") if f] + [("lora-fp16", b) for b in base_formats.split(",") if b]
    with err_console.status("fitting", spinner="dots") as status:
        rows = compare_formats(model, adapter=adapter, variants=variants, bpw=bpw, iters=iters, importance=importance,
                               head_format=head_format, progress=lambda m: status.update(f"fitting {m} ..."))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_variants(rows)


def _print_variants(rows: list[dict]) -> None:
    table = Table(title="formats (output error vs fp32 base + fp32 adapter, held-in inputs)")
    cols = ["adapter", "base", "adapter bytes", "vs fp16 LoRA", "base bytes", "vs fp16 base", "adapter rec. err",
            "base rec. err", "head rec. err", "output rel. err"]
    if any("cosine_similarity" in r for r in rows):
        cols.append("cosine")
    for c in cols:
        table.add_column(c, justify="left" if c in ("adapter", "base") else "right")
    for r in rows:
        cells = [r["adapter_format"] or "-", r["base_format"], f"{r['adapter_bits'] // 8:,}",
                 f"{r['adapter_ratio_vs_lora_fp16']:.2f}x" if r["adapter_ratio_vs_lora_fp16"] else "-",
                 f"{r['base_bits'] // 8:,}", f"{r['base_ratio_vs_fp16']:.2f}x", f"{r['adapter_rel_error']:.4f}",
                 f"{r['base_rel_error']:.4f}",
                 f"{r['head_format']} {r['head_rel_error']:.4f}" if r.get("head_format") else "-",
                 f"{r['output_rel_error']:.4f}" if "output_rel_error" in r else "-"]
        if "cosine" in cols:
            cells.append(f"{r['cosine_similarity']:.4f}" if "cosine_similarity" in r else "-")
        table.add_row(*cells)
    _console().print(table)


if __name__ == "__main__":
    main()
