"""Analytic FLOPs of the language-model prefill."""

from __future__ import annotations

from typing import Any


def prefill_flops(text_config: Any, tokens: int) -> dict[str, int]:
    """Analytic FLOPs of the language-model prefill over ``tokens`` tokens (a lower bound).

    With ``L`` layers, hidden size ``H``, ``n_h`` query heads and ``n_kv`` key/value heads of size
    ``d``, MLP width ``I`` and vocabulary ``V``:

    * linear layers: ``P_linear = L * (2 * H * n_h * d + 2 * H * n_kv * d + 3 * H * I)`` weights
      (q and o projections, k and v projections, gate/up/down), each weight one multiply-add per
      token: ``2 * N * P_linear``;
    * attention (causal): query ``i`` sees ``i`` keys, ``N (N + 1) / 2`` query-key pairs per head;
      ``Q K^T`` and ``softmax(.) V`` each cost ``2 * d`` FLOPs per pair:
      ``2 * L * n_h * d * N * (N + 1)`` (= ``4 * L * H * N^2 / 2`` for large ``N`` when ``n_h d = H``);
    * the head on the last position only: ``2 * H * V``.

    Norms, rotary embeddings, softmax, biases and activations are left out (a few per cent). For a
    mixture-of-experts MLP, ``I`` is the active width (``num_experts_per_tok * moe_intermediate_size``).
    """
    hidden = int(text_config.hidden_size)
    layers = int(text_config.num_hidden_layers)
    heads = int(text_config.num_attention_heads)
    kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text_config, "head_dim", None) or hidden // heads)
    experts_per_token = getattr(text_config, "num_experts_per_tok", None)
    moe_width = getattr(text_config, "moe_intermediate_size", None)
    if experts_per_token and moe_width:
        intermediate = int(experts_per_token) * int(moe_width)
    else:
        intermediate = int(text_config.intermediate_size)
    vocab = int(text_config.vocab_size)
    n = int(tokens)
    linear_params = layers * (2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate)
    linear = 2 * n * linear_params
    attention = 2 * layers * heads * head_dim * n * (n + 1)
    head = 2 * hidden * vocab if n > 0 else 0
    return {
        "tokens": n,
        "linear": linear,
        "attention": attention,
        "lm_head": head,
        "total": linear + attention + head,
        "linear_params": linear_params,
    }
