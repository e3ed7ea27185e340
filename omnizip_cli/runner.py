"""One answer, end to end: media -> processor -> encoders -> keep plan -> prefill -> decode.

:func:`answer` is what ``omnizip ask`` runs and what ``omnizip profile`` repeats; it returns a
:class:`RunResult` holding the answer and every figure of the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .stats import StageTimer, TokenCounts

if TYPE_CHECKING:
    from .compression import KeepPlan, OmniZipConfig
    from .decoding import GenerationOptions, GenerationResult
    from .inputs import ModelInputs
    from .loading import LoadedModel
    from .media import DecodedMedia
    from .pipeline import EncodedPrompt


@dataclass
class RunResult:
    """The answer and the measurements of one run."""

    answer: str
    token_ids: list[int]
    tokens: TokenCounts
    compression: dict[str, Any] | None  # the OmniZip setting used, None when off
    timer: StageTimer
    generation: GenerationResult
    prompt_length: int  # tokens before compression
    prefill_length: int  # tokens the language model was prefilled with
    context_length: int  # the model's maximum context
    groups: list[dict[str, Any]] = field(default_factory=list)  # per time group figures, when compressed
    warnings: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(record.seconds for name, record in self.timer.stages.items() if name != "load_model")


def context_length(model: Any) -> int:
    return int(getattr(model.config.get_text_config(), "max_position_embeddings", 32768))


def prepare_inputs(
    loaded: LoadedModel, media: DecodedMedia, question: str, system: str | None, timer: StageTimer
) -> ModelInputs:
    """Run the stock processor (timed as "preprocess")."""
    from .inputs import build_inputs

    with timer.stage("preprocess"):
        return build_inputs(loaded.processor, media, question, system)


def answer(
    loaded: LoadedModel,
    inputs: ModelInputs,
    compression: OmniZipConfig | None,
    options: GenerationOptions,
    *,
    timer: StageTimer,
    on_token: Callable[[int], None] | None = None,
    on_before_prefill: Callable[[int, int], None] | None = None,
    head_on_all_positions: bool = False,
    fast_decoder: bool | None = None,
) -> RunResult:
    """Encode, compress (when ``compression`` is given), prefill and decode one prompt.

    ``on_before_prefill(prompt_length, prefill_length)`` is called once the prefill length is known
    (the CLI warns there when the prompt exceeds the model's context).
    """
    import torch

    from .decoding import generate
    from .fast_decoding import choose_decoder, generate_fast
    from .pipeline import compressed_prefill, count_tokens, encode_prompt, plan_compression, uncompressed_prefill

    model = loaded.model
    compress = compression is not None
    encoded: EncodedPrompt = encode_prompt(model, inputs, record_saliency=compress and _has_audio(inputs), timer=timer)
    plan: KeepPlan | None = None
    if compress:
        with timer.stage("keep_plan"):
            plan = plan_compression(model, encoded, compression)
            prefill_inputs = compressed_prefill(encoded, plan)
    else:
        prefill_inputs = uncompressed_prefill(encoded)
    tokens = count_tokens(model, encoded, prefill_inputs.kept)
    if on_before_prefill is not None:
        on_before_prefill(encoded.length, prefill_inputs.length)

    sync = (lambda: torch.cuda.synchronize(loaded.device)) if loaded.device.startswith("cuda") else None
    if loaded.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(loaded.device)
    decoder, decoder_reason = choose_decoder(loaded.device, loaded.attn_implementation)
    if not (loaded.fast_decoder if fast_decoder is None else fast_decoder):
        decoder, decoder_reason = "eager", "fast decoder off (--eager-decode)"
    emitted: list[int] = []

    def on_token_counted(token_id: int) -> None:
        emitted.append(token_id)
        if on_token is not None:
            on_token(token_id)

    decode_kwargs = dict(
        prompt_ids=encoded.input_ids, on_token=on_token_counted, sync=sync, head_on_all_positions=head_on_all_positions
    )
    started = time.perf_counter()
    if decoder == "fast":
        try:
            result = generate_fast(model, prefill_inputs, options, **decode_kwargs)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the fast path is an optimisation: fall back, say so
            if emitted:  # part of the answer is out already: cannot restart silently
                raise
            decoder_reason = f"fast decoder failed ({type(exc).__name__}: {str(exc)[:120]}); eager loop used"
            started = time.perf_counter()
            result = generate(model, prefill_inputs, options, **decode_kwargs)
    else:
        result = generate(model, prefill_inputs, options, **decode_kwargs)
    elapsed = time.perf_counter() - started
    if decoder_reason:
        result.notes.append(decoder_reason)
    warmup = float(getattr(result, "warmup_seconds", 0.0))
    if warmup > 0:
        timer.add("decode_warmup", warmup)  # paid once per process (CUDA-graph capture), kept out of "decode"
    timer.add("prefill", result.prefill_seconds)
    timer.add("decode", max(elapsed - warmup - result.prefill_seconds, 0.0))
    peak = int(torch.cuda.max_memory_allocated(loaded.device)) if loaded.device.startswith("cuda") else None
    for name in ("prefill", "decode"):
        record = timer.stages[name]
        if peak is not None:
            record.peak_memory_bytes, record.memory_kind = peak, "cuda_allocated"
        else:
            from .stats import process_peak_rss_bytes

            record.peak_memory_bytes, record.memory_kind = process_peak_rss_bytes(), "cpu_rss"

    text = loaded.processor.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    return RunResult(
        answer=text,
        token_ids=result.token_ids,
        tokens=tokens,
        compression=compression.to_dict() if compression is not None else None,
        timer=timer,
        generation=result,
        prompt_length=encoded.length,
        prefill_length=prefill_inputs.length,
        context_length=context_length(model),
        groups=_group_rows(plan),
    )


def _has_audio(inputs: ModelInputs) -> bool:
    return inputs.tensors.get("input_features") is not None


def _group_rows(plan: KeepPlan | None) -> list[dict[str, Any]]:
    if plan is None:
        return []
    groups = getattr(plan, "groups", None)
    to_rows = getattr(groups, "to_rows", None)
    return list(to_rows()) if callable(to_rows) else []
