"""Short, seeded LoRA training on small tasks built in code, so zoo adapters have trained structure.

A freshly initialised LoRA pair (B = 0, A Kaiming) says nothing about how a format converts a real
adapter: trained factors have sign structure and near rank-1 magnitudes (low residual-to-magnitude
ratio). A few hundred steps on a synthetic task are enough to get there, offline and in seconds.
"""

from collections.abc import Callable, Iterator

import torch

from models.export import quiet

Batch = dict[str, torch.Tensor]


def permutation_lm_batches(vocab: int, seq: int, batch: int, seed: int) -> Iterator[Batch]:
    """Causal-LM data where each next token follows a fixed random permutation (90%) or is random."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(vocab, generator=gen)
    while True:
        ids = torch.empty((batch, seq), dtype=torch.int64)
        ids[:, 0] = torch.randint(0, vocab, (batch,), generator=gen)
        for t in range(1, seq):
            noise = torch.rand(batch, generator=gen) < 0.1
            ids[:, t] = torch.where(noise, torch.randint(0, vocab, (batch,), generator=gen), perm[ids[:, t - 1]])
        yield {"input_ids": ids, "labels": ids}


_POS = ["great", "wonderful", "excellent", "delightful", "superb", "pleasant", "fantastic", "lovely"]
_NEG = ["terrible", "awful", "horrible", "dreadful", "poor", "disappointing", "bad", "miserable"]
_SUBJ = ["the food", "the movie", "our stay", "the service", "the concert", "this book", "the trip", "the game"]
_TEMPL = ["{s} was {a}.", "honestly, {s} was {a}", "i thought {s} was really {a}", "{s}: {a}, truly {a}"]


def sentiment_sentences(n: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """Template sentences with a binary sentiment label (real words, so a real tokenizer applies)."""
    gen = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        pos = bool(torch.rand(1, generator=gen) < 0.5)
        words = _POS if pos else _NEG
        pick = lambda seq: seq[int(torch.randint(0, len(seq), (1,), generator=gen))]  # noqa: E731
        texts.append(pick(_TEMPL).format(s=pick(_SUBJ), a=pick(words)))
        labels.append(int(pos))
    return texts, torch.tensor(labels)


def train(model: torch.nn.Module, batches: Iterator[Batch], loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
          *, steps: int, lr: float, seed: int, extra: list[torch.nn.Parameter] | None = None) -> list[float]:
    """Adam on the trainable (LoRA) parameters; returns the loss curve."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad] + (extra or [])
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    with quiet():
        for _, batch in zip(range(steps), batches, strict=False):
            loss = loss_fn(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    model.eval()
    return losses
