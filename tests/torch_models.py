"""Small torch / transformers models for exporter tests: MLP, BERT-style encoder, decoders."""

import torch

VOCAB = 128


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                                       torch.nn.ReLU(), torch.nn.LayerNorm(64), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


class HfWrapper(torch.nn.Module):
    """input_ids (+ attention_mask) -> the model's first output tensor."""

    def __init__(self, model: torch.nn.Module, attr: str):
        super().__init__()
        self.model, self.attr = model, attr

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **({"use_cache": False}
                                                                                 if self.attr == "logits" else {}))
        return getattr(out, self.attr)


def build(kind: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str]]:
    """(module in eval mode, example inputs, input names), seeded."""
    import transformers as tf

    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (1, 12))
    mask = torch.ones((1, 12), dtype=torch.int64)
    small = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128}
    if kind == "mlp":
        return Mlp().eval(), (torch.randn(4, 32),), ["x"]
    if kind == "bert":
        model = tf.BertModel(tf.BertConfig(**small, max_position_embeddings=64), add_pooling_layer=False)
        return HfWrapper(model.eval(), "last_hidden_state").eval(), (ids, mask), ["input_ids", "attention_mask"]
    if kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**small, num_key_value_heads=2, max_position_embeddings=64))
    elif kind == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**small, num_key_value_heads=2, max_position_embeddings=64))
    elif kind == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64))
    else:
        raise ValueError(kind)
    return HfWrapper(model.eval(), "logits").eval(), (ids, mask), ["input_ids", "attention_mask"]
