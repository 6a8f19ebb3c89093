"""T3's weights: the hub files' keys -> parameters, strict loading, quantization."""

from __future__ import annotations

from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn

from ..layers import warn_if_quantized_matmul_is_slow
from ..weights import load_strict
from .model import T3

# ----------------------------------------------------------------------------- weights

GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
DEAD_KEYS = ("tfmr.embed_tokens.weight", "tfmr.wte.weight")


def sanitize(weights: Mapping[str, mx.array]) -> dict[str, mx.array]:
    """Hub T3 file (``t3_cfg``, ``t3_mtl23ls_v2/v3``, ``t3_turbo_v1``, ``t3_nano_v1``) ->
    T3 parameters: drops the dead backbone token embedding and transposes GPT-2's
    ``Conv1D`` weights ([in, out] -> [out, in]). Only for torch-layout files."""
    if "model" in weights and not hasattr(weights["model"], "shape"):
        raise ValueError("this file wraps the weights in a 'model' entry; pass weights['model'][0]")
    out = {}
    for key, value in weights.items():
        if key in DEAD_KEYS:
            continue
        if key.startswith("tfmr.h.") and key.endswith(GPT2_CONV1D):
            value = mx.contiguous(value.T)  # row-major [out, in], as Linear streams it
        out[key] = value
    return out


def load_t3(model: T3, weights: Mapping[str, mx.array], what: str = "T3") -> T3:
    """Strictly load a hub file's tensors (``sanitize`` applied) into ``model``."""

    load_strict(model, sanitize(weights), what)
    return model


def quantize_t3(model: T3, bits: int = 8, group_size: int = 64) -> T3:
    """Quantize the backbone's linear layers in place (embeddings, heads and the
    conditioning encoder stay float).

    Works on a float model (quantizes its weights) or on a fresh one before loading
    weights saved from a quantized model."""
    if bits not in (2, 3, 4, 5, 6, 8):
        raise ValueError(f"bits must be one of 2, 3, 4, 5, 6, 8 (4 or 8 recommended), got {bits}")
    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size must be 32, 64 or 128, got {group_size}")

    warn_if_quantized_matmul_is_slow(bits)

    def quantizable(_: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and module.weight.shape[-1] % group_size == 0

    nn.quantize(model.tfmr, group_size=group_size, bits=bits, class_predicate=quantizable)
    return model
