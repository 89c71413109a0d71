"""Whole-model figures from a one-block model (the llama2-7b-block zoo entry): per-block latency, energy and
bytes multiplied by the layer count, each labelled as scaled. Attention over the KV cache, the weights and the
adapter all repeat per block; the embedding and LM head are not included (the model says so)."""

from typing import Any


def scaled_figure(f: dict[str, Any] | None, layers: int) -> dict[str, Any] | None:
    if f is None:
        return None
    return {**f, "value": f["value"] * layers, "scaled": layers,
            "source": f"{f['source']}; x{layers} layers, scaled from one block"}


def scaled_results(model: dict[str, Any], cells: list[dict[str, Any]],
                   adapters: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per cell and phase: the primary latency and the energy per token x layers; per variant: base weight and
    adapter bytes x layers. None unless the model declares a scale (matrix.json model.scaled)."""
    from hwsim.report.collect import primary

    scale = model.get("scaled")
    if not scale:
        return None
    n = int(scale["layers"])
    rows = []
    for c in cells:
        for phase, figs in c["latency"].items():
            energy = c["energy_per_token"].get(phase)
            rows.append({"variant": c["variant"], "target": c["target"], "phase": phase,
                         "latency": scaled_figure(primary(figs), n),
                         "energy_per_token": scaled_figure(energy["total"] if energy else None, n)})
    weights = [{"variant": a["variant"], "base_weight_bytes": scaled_figure(a.get("base_weight_bytes"), n),
                "adapter_bytes": scaled_figure(a.get("adapter_bytes"), n)} for a in adapters]
    return {"layers": n, "of": scale["of"], "cells": rows, "variants": weights}
