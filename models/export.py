"""Export torch models to ONNX for the zoo (torch's dynamo exporter, one self-contained file)."""

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from hwsim.errors import HwsimError


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep torch/transformers chatter (stdout prints, warnings, log lines) off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "transformers", "peft")]
    levels = [lg.level for lg in loggers]
    import transformers

    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def export_onnx(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str],
                output_names: list[str], dynamic_shapes: dict | None = None) -> None:
    """torch.onnx.export (dynamo) into one file, its console chatter kept off stdout."""
    try:
        with quiet():
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False,
                              input_names=input_names, output_names=output_names,
                              dynamic_shapes=dynamic_shapes)
    except Exception as e:  # the exporter raises many types; report them as one line
        raise HwsimError(f"ONNX export of {type(module).__name__} failed: {e}".splitlines()[0]) from e
