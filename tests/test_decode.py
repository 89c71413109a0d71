"""Decode with a KV cache: the exported step is the model's real next-token computation over the cached context,
and its hwsim build matches onnxruntime."""

from pathlib import Path

import numpy as np
import pytest
import torch

from codegen import kv_cache
from hwsim.api import compile_model, import_graph, resolve_model
from models.variants import apply_formats, export_variant, load_base
from models.zoo_build import CachedStep

CONTEXT = 12


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama with grouped-query attention (4 heads, 2 KV heads): the cache has KV-head shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    root = tmp_path_factory.mktemp("llama") / "base"
    LlamaForCausalLM(config).eval().save_pretrained(root)
    return root


def test_cached_step_equals_the_full_forward_pass(llama_dir: Path) -> None:
    """Prefill CONTEXT tokens, then one CachedStep on the next: the logits and the appended cache equal those of
    one forward pass over all CONTEXT + 1 tokens (so the step attends to the whole context, at its position)."""
    model = load_base(str(llama_dir)).model
    ids = torch.randint(0, 96, (1, CONTEXT + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=True)
        past = model(input_ids=ids[:, :CONTEXT], use_cache=True).cache
        keys = torch.stack([layer.keys for layer in past.layers])
        values = torch.stack([layer.values for layer in past.layers])
        assert keys.shape == (2, 1, 2, CONTEXT, 16)
        logits, new_keys, new_values = CachedStep(model, embeds=False)(ids[:, CONTEXT:], keys, values)
    torch.testing.assert_close(logits[0, -1], full.logits[0, -1], rtol=1e-4, atol=1e-5)
    cache = full.cache.layers
    torch.testing.assert_close(new_keys, torch.stack([layer.keys for layer in cache]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new_values, torch.stack([layer.values for layer in cache]), rtol=1e-4, atol=1e-5)


def test_decode_export_builds_and_matches_onnxruntime(llama_dir: Path, tmp_path: Path) -> None:
    """The decode ONNX (ternary base, LoRDBA-free: the base path) compiles for the host and its artifact matches
    onnxruntime on every output, the new token's attention reading all CONTEXT + 1 positions."""
    base = load_base(str(llama_dir))
    apply_formats(base, None, None, "ternary")
    info = export_variant(base, tmp_path / "step.onnx", phase="decode", context=CONTEXT)
    assert info["inputs"] == {"input_ids": [1, 1], "past_keys": [2, 1, 2, CONTEXT, 16],
                              "past_values": [2, 1, 2, CONTEXT, 16]}
    assert info["hwsim_ops"] == ["TernaryMatMul"]
    result = compile_model(str(tmp_path / "step.onnx"), target="host", out=tmp_path / "host", runs=3)
    m = result.manifest
    assert m["verification"]["passed"] and {r["name"] for r in m["verification"]["outputs"]} == {
        "logits", "present_keys", "present_values"}
    assert m["ir"]["ops"]["TERNARY_ACCUMULATE"] == 2 * 7 and m["ir"]["ops"]["CONCAT"] >= 4
    inputs = {i["name"]: i["shape"] for i in m["inputs"]}
    assert inputs["past_keys"] == [2, 1, 2, CONTEXT, 16]
    # the stacked caches are one padded copy of past, appended in place, each layer's cache a view of it
    caches = kv_cache.find(import_graph(resolve_model(str(tmp_path / "step.onnx")), None))
    assert sorted(c.present.name for c in caches) == ["present_keys", "present_values"]
    assert all(len(c.layer) == 2 for c in caches)
    softmax_widths = {line.split("float32[")[1].split("]")[0].split(",")[-1]
                      for line in (tmp_path / "host" / "ir.txt").read_text().splitlines() if "SOFTMAX" in line}
    assert softmax_widths == {str(CONTEXT + 1)}
    assert np.isfinite(m["latency"]["tvm"]["median_ms"])
