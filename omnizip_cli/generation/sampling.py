"""Choosing tokens as stock ``generate`` does: its logits processors, end tokens, greedy or sampled.

Both decoders (:mod:`~omnizip_cli.generation.eager` and :mod:`~omnizip_cli.generation.static_graph`)
choose through :class:`TokenChooser`, so a seed, a repetition penalty or a temperature give the same
tokens on either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError

SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate an answer. ``temperature`` 0 is greedy; ``top_p``/``top_k`` None: the checkpoint's.

    ``stop``: strings that end the answer where the first of them appears in its text (the text is
    cut before it; ``stop_reason`` ``"stop"``), as OpenAI's ``stop``.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise UsageError(f"--temperature must be >= 0 and finite (0 is greedy), not {self.temperature}")
        if self.seed is not None and not 0 <= self.seed <= SEED_MAX:
            raise UsageError(f"--seed must be between 0 and {SEED_MAX}, not {self.seed}")
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise UsageError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise UsageError(f"top_k must be >= 0, not {self.top_k}")
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise UsageError("stop must be a tuple of non-empty strings")


def end_token_ids(generation_config: Any, text_config: Any) -> list[int]:
    """The ids that end an answer, as ``generate`` uses them."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(text_config, "eos_token_id", None)
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return [int(i) for i in ids if i is not None]


def build_logits_processor(generation_config: Any, options: GenerationOptions) -> Any:
    """The logits processors stock ``generate`` would apply, from the generation config and options."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    config = generation_config
    processors = LogitsProcessorList()
    penalty = getattr(config, "repetition_penalty", None)
    if penalty is not None and penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=penalty))
    if options.temperature > 0:
        top_k = options.top_k if options.top_k is not None else getattr(config, "top_k", None)
        top_p = options.top_p if options.top_p is not None else getattr(config, "top_p", None)
        if options.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(options.temperature))
        if top_k is not None and top_k != 0:
            processors.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return processors


class TokenChooser:
    """Chooses each new token on the device, with the history ``generate`` would show its processors.

    ``prompt_ids [1, n]``: the whole uncompressed prompt (a repetition penalty sees it as in
    ``generate``). Seeds the global generator once when sampling with a seed (same draws as
    ``generate``).
    """

    def __init__(self, text_model: Any, options: GenerationOptions, prompt_ids: torch.Tensor | None,
                 device: torch.device) -> None:
        self.options = options
        self.processors = build_logits_processor(text_model.generation_config, options)
        self.stops = frozenset(end_token_ids(text_model.generation_config, text_model.config))
        self.keep_history = len(self.processors) > 0
        prompt = prompt_ids.to(device) if prompt_ids is not None else torch.zeros((1, 0), dtype=torch.long, device=device)
        self.base = int(prompt.shape[1])
        max_new = max(int(options.max_new_tokens), 1)
        self.history = torch.empty((1, self.base + max_new), dtype=torch.long, device=device)
        self.history[:, : self.base] = prompt
        if options.temperature > 0 and options.seed is not None:
            torch.manual_seed(options.seed)

    def choose(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """The token after ``step`` answer tokens, from logits ``[1, V]``: ``[1, 1]`` long, on the device."""
        scores = logits.float() if logits.dtype != torch.float32 else logits
        if self.keep_history:
            scores = self.processors(self.history[:, : self.base + step], scores)
        if self.options.temperature > 0:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        else:
            token = torch.argmax(scores, dim=-1, keepdim=True)
        if self.keep_history:
            self.history[:, self.base + step : self.base + step + 1].copy_(token)
        return token
