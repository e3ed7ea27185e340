"""The tiny Qwen2.5-Omni processor (no model) and the adapter's processor call, for layout tests."""

from __future__ import annotations

from typing import Any


def tiny_processor() -> Any:
    """The stock ``Qwen2_5OmniProcessor`` around the tiny tokenizer (built in a second, no weights)."""
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    return ADAPTER.tiny_processor()


def build_inputs(processor: Any, media: Any, question: str) -> Any:
    """The adapter's processor call on the whole one-turn prompt (a ``PreparedPrompt``)."""
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    return ADAPTER.prepare(processor, media, question=question)
