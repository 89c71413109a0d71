"""Each built-in model's task, held-in: the inputs sign-form training distils on and the task accuracy the
report shows. The tasks are the ones the zoo adapters were trained on (models/train.py), drawn with seeds the
output-error inputs (Base.inputs, seed 0) do not use.

- tiny-llama: next-token accuracy on the synthetic permutation task (the best possible is about 0.9: one
  token in ten is random).
- minilm: sentiment of template reviews by nearest class centroid of the embeddings; the centroids are the
  unquantised model's (fp32 base + fp32 adapter), so a variant is scored with the head the task was fit with.
- smollm2-135m: completing "<review> sentiment:" with " positive" or " negative" (the higher logit).
Other models have no task: training distils on their held-in inputs and no task accuracy is reported.
"""

from collections.abc import Callable

import numpy as np
import torch

from models.export import quiet
from models.train import permutation_lm_batches, sentiment_sentences

Inputs = tuple[torch.Tensor, ...]
TRAIN_SEED, EVAL_SEED = 1, 2


def _arch(base) -> str:
    from models.zoo import ZOO

    return ZOO[base.name].spec.arch if base.name in ZOO else ""


def _tokenizer(base):
    from transformers import AutoTokenizer

    with quiet():
        return AutoTokenizer.from_pretrained(base.path)


def _permutation_rows(base, n: int, seq: int) -> torch.Tensor:
    """`n` sequences of the zoo's permutation (its seed), from one draw: rows are disjoint by position."""
    from models.zoo import ZOO

    return next(permutation_lm_batches(base.model.config.vocab_size, seq, n, ZOO[base.name].spec.seed))["input_ids"]


def _prompts(base, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """smollm2's task prompts, right-padded: ids, the index of each prompt's last token, labels."""
    tok = _tokenizer(base)
    texts, labels = sentiment_sentences(n, seed)
    enc = tok([f"{t} sentiment:" for t in texts], padding="max_length", max_length=24, truncation=True,
              return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].sum(1) - 1, labels


def train_batches(base, count: int, batch: int, seq: int) -> list[Inputs]:
    """`count` batches of prefill inputs for distillation (the task's, where the model has one)."""
    arch = _arch(base)
    if arch == "llama":
        rows = _permutation_rows(base, 64 + count * batch, seq)[64:]  # the first 64 rows are the accuracy set
        return [(rows[i * batch:(i + 1) * batch],) for i in range(count)]
    if arch == "smollm2":
        ids, _, _ = _prompts(base, count * batch, TRAIN_SEED)
        return [(ids[i * batch:(i + 1) * batch],) for i in range(count)]
    if arch == "minilm":
        tok = _tokenizer(base)
        texts, _ = sentiment_sentences(count * batch, TRAIN_SEED)
        enc = tok(texts, padding="max_length", max_length=seq, truncation=True, return_tensors="pt")
        return [(enc["input_ids"][i * batch:(i + 1) * batch], enc["attention_mask"][i * batch:(i + 1) * batch])
                for i in range(count)]
    return [base.inputs(1000 + i, batch=batch, seq=seq) for i in range(count)]


def task_head(base, reference: Callable[..., torch.Tensor]) -> np.ndarray | None:
    """What the task is scored with, from the unquantised model's prefill wrapper: minilm's class centroids."""
    if _arch(base) != "minilm":
        return None
    tok = _tokenizer(base)
    texts, labels = sentiment_sentences(256, TRAIN_SEED)
    enc = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        z = reference(enc["input_ids"], enc["attention_mask"]).numpy()
    return np.stack([z[labels.numpy() == c].mean(0) for c in (0, 1)])


class TaskAccuracy:
    """The task accuracy of a model's prefill wrapper (None for models without a task); `head` is task_head's."""

    def __init__(self, base, head: np.ndarray | None):
        self.arch = _arch(base)
        if self.arch == "minilm":
            assert head is not None
            tok = _tokenizer(base)
            self.centroids = head
            texts, self.labels = sentiment_sentences(256, EVAL_SEED)
            self.enc = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        elif self.arch == "smollm2":
            self.ids, self.last, self.labels = _prompts(base, 128, EVAL_SEED)
            tok = _tokenizer(base)
            self.choice = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" negative", " positive")]
        elif self.arch == "llama":
            self.rows = _permutation_rows(base, 64, 32)

    @property
    def description(self) -> str | None:
        return {"llama": "next-token accuracy, permutation task (64 x 32 tokens; ceiling ~0.9)",
                "minilm": "sentiment, nearest centroid of the unquantised model's embeddings (256 reviews)",
                "smollm2": "sentiment completion, ' positive' vs ' negative' (128 reviews)"}.get(self.arch)

    def __call__(self, wrapper: Callable[..., torch.Tensor]) -> float | None:
        with torch.no_grad():
            if self.arch == "llama":
                logits = wrapper(self.rows)
                return float((logits[:, :-1].argmax(-1) == self.rows[:, 1:]).float().mean())
            if self.arch == "minilm":
                z = wrapper(self.enc["input_ids"], self.enc["attention_mask"]).numpy()
                pred = (z @ self.centroids.T).argmax(1)  # unit-norm embeddings: nearest = largest dot product
                return float((pred == self.labels.numpy()).mean())
            if self.arch == "smollm2":
                logits = wrapper(self.ids)[torch.arange(len(self.ids)), self.last][:, self.choice]
                return float((logits.argmax(-1) == self.labels).float().mean())
        return None
