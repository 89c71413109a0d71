"""Export torch models to ONNX for the zoo (torch's dynamo exporter, one self-contained file)."""

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from hwsim.errors import HwsimError


class _LogitsOnly(torch.nn.Module):
    """Exports input_ids -> logits (no KV cache); the mask is built inside from static shapes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def build_llama_lora(spec) -> torch.nn.Module:
    """A seeded Llama with PEFT LoRA on `spec.lora_targets`; B is random too, so the branch matters."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    cfg = LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                      intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
                      num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_attention_heads,
                      max_position_embeddings=spec.max_position_embeddings)
    model = LlamaForCausalLM(cfg).eval()
    lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules=list(spec.lora_targets),
                      lora_dropout=0.0)
    peft_model = get_peft_model(model, lora).eval()
    gen = torch.Generator().manual_seed(spec.seed + 1)
    dtype = getattr(torch, spec.lora_dtype)
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            b = module.lora_B["default"].weight
            with torch.no_grad():
                b.copy_(torch.randn(b.shape, generator=gen) * 0.02)
            module.lora_A["default"].to(dtype)
            module.lora_B["default"].to(dtype)
    return peft_model


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep torch/transformers chatter (stdout prints, warnings, log lines) off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "transformers", "peft")]
    levels = [lg.level for lg in loggers]
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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


def export_llama_lora(spec, path: Path) -> None:
    with quiet():
        module = _LogitsOnly(build_llama_lora(spec)).eval()
    ids = torch.zeros((1, 16), dtype=torch.int64)
    seq = torch.export.Dim("seq", min=2, max=spec.max_position_embeddings)
    with torch.no_grad():
        export_onnx(module, (ids,), path, ["input_ids"], ["logits"], {"input_ids": {1: seq}})
