"""Perplexity of causal LMs on a natural-text corpus every machine has offline: the topic texts of the Python
Language Reference that CPython ships as `pydoc_data.topics` (~465,000 characters of English prose with code
examples; the `help()` texts). Nothing is downloaded; the corpus hash and Python version go with every figure,
since another Python release ships other text.

Tokens: the model's tokenizer when one is saved beside it, else bytes (models with a vocabulary of at least 256
and no tokenizer, like the seeded tiny-llama, whose perplexity then measures distance from its fp model rather
than language skill). The corpus is cut into `windows` evenly spaced windows of `length` tokens; perplexity is
exp of the mean next-token negative log-likelihood over all of them, computed from the logits of the torch model
and, separately, of the exported ONNX file in onnxruntime (the two must agree).
"""

import hashlib
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.export import quiet

WINDOWS, LENGTH = 8, 128


def corpus_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def corpus_tokens(base, windows: int = WINDOWS, length: int = LENGTH) -> tuple[np.ndarray, dict[str, Any]] | None:
    """[windows, length] token ids and what they are; None when the model has no next-token perplexity."""
    if base.kind != "causal-lm":
        return None
    text = corpus_text()
    length = min(length, int(getattr(base.model.config, "max_position_embeddings", length)))
    if base.path is not None and (base.path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        with quiet():
            tok = AutoTokenizer.from_pretrained(base.path)
        ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"], np.int64)
        tokens = "the model's tokenizer"
    elif base.model.config.vocab_size >= 256:
        ids = np.frombuffer(text.encode(), np.uint8).astype(np.int64)
        tokens = "bytes (the model has no tokenizer)"
    else:
        return None
    starts = np.linspace(0, len(ids) - length, windows).astype(np.int64)
    info = {"corpus": "pydoc_data.topics (CPython's Language Reference topics)",
            "python": platform.python_version(), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
            "tokens": tokens, "windows": windows, "length": length, "predicted_tokens": windows * (length - 1)}
    return np.stack([ids[s:s + length] for s in starts]), info


def _ppl(logits: Callable[[np.ndarray], np.ndarray], ids: np.ndarray) -> float:
    nll, count = 0.0, 0
    for row in ids:  # one window at a time: a 49k vocabulary's logits are 25 MB per window
        z = logits(row[None]).astype(np.float64)[0, :-1]
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(row) - 1), row[1:]].sum())
        count += len(row) - 1
    return float(np.exp(nll / count))


def perplexity_torch(wrapper: torch.nn.Module, ids: np.ndarray) -> float:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapper(torch.from_numpy(x)).numpy()
    return _ppl(run, ids)


def perplexity_onnx(path: Path, ids: np.ndarray, input_name: str = "input_ids") -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _ppl(lambda x: sess.run(None, {input_name: x})[0], ids)
