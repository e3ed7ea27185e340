"""Reference computations for the exactness tests: stock ``generate`` and the stock language model by hand."""

from __future__ import annotations

from typing import Any

import torch


def full_prompt(loaded: Any, media: Any, question: str, system: str | None = None) -> Any:
    """The stock processor on the whole one-turn prompt (what a user of stock transformers builds)."""
    from omnizip_cli.generation.opening import prepare

    return prepare(loaded, media, system=system, question=question)


def stock_generate(loaded: Any, prepared: Any, new_tokens: int, input_ids: torch.Tensor | None = None
                   ) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and first-step logits of stock ``generate(**inputs, use_audio_in_video=...)``.

    ``input_ids`` replaces the prompt's ids (a conversation continued after the media block), with
    an all-ones attention mask; the modality tensors stay.
    """
    tensors = dict(prepared.tensors)
    if input_ids is not None:
        tensors["input_ids"] = input_ids
        tensors["attention_mask"] = torch.ones_like(input_ids)
    out = loaded.model.generate(
        **tensors,
        use_audio_in_video=prepared.use_audio_in_video,
        max_new_tokens=new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    prompt_length = tensors["input_ids"].shape[1]
    return out.sequences[0, prompt_length:].tolist(), out.logits[0][0]


def manual_greedy(text: Any, embeds: torch.Tensor, positions: torch.Tensor, new_tokens: int,
                  stops: set[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """The stock language model by hand: the whole (pruned) sequence each step, no KV cache at all.

    ``embeds [1, n, D]`` at ``positions [3, 1, n]``; each new token at the previous position + 1.
    """
    tokens: list[int] = []
    first_logits = None
    with torch.no_grad():
        for _ in range(new_tokens):
            hidden = text.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
            logits = text.lm_head(hidden)[0, -1]
            first_logits = logits if first_logits is None else first_logits
            token = int(torch.argmax(logits))
            tokens.append(token)
            if stops and token in stops:
                break
            embeds = torch.cat([embeds, text.embed_tokens(torch.tensor([[token]]))], dim=1)
            positions = torch.cat([positions, positions[:, :, -1:] + 1], dim=2)
    assert first_logits is not None
    return tokens, first_logits


def session_sequence(session: Any, turn_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (pruned) prefix of ``session`` followed by ``turn_ids`` at consecutive positions: embeds, positions."""
    text = session.text
    prefill = session.prefill
    ids = torch.tensor([turn_ids], dtype=torch.long)
    with torch.no_grad():
        embeds = torch.cat([prefill.embeds, text.embed_tokens(ids)], dim=1)
    offsets = torch.arange(1, len(turn_ids) + 1).to(prefill.position_ids.dtype).view(1, 1, -1)
    positions = torch.cat([prefill.position_ids, prefill.position_ids[:, :, -1:] + offsets], dim=2)
    return embeds, positions
