#!/usr/bin/env python
"""Time every model stage of one answer on a full-size Qwen omni thinker (Qwen2.5-Omni or Qwen3-Omni) with random weights.

    python benchmarks/model_stages.py                  # GPU: random-weight 7B, clips of 30/60/120/300 s
    python benchmarks/model_stages.py --size 3b --seconds 60
    python benchmarks/model_stages.py --family qwen3 --seconds 60   # GPU: random-weight Qwen3-Omni 30B-A3B
    python benchmarks/model_stages.py --tiny           # CPU smoke: same code, tiny dimensions (CI)
    python benchmarks/model_stages.py --family qwen3 --tiny         # CPU smoke: the tiny-qwen3 thinker

``--family`` picks the model family: ``qwen2.5`` (default; ``--size`` 7b or 3b) or ``qwen3`` (one
size, the 30B-A3B thinker of ``benchmarks/qwen3_configs.py``; ``--size`` is refused with it). Every
stage goes through the family's own adapter (``omnizip_cli.models.qwen2_5_omni`` /
``omnizip_cli.models.qwen3_omni``), found from the model's ``model_type``: its encode (for Qwen3-Omni
the vision encoder's deepstack features and the windowed audio saliency), its time groups in the keep
plan, its ``prefill_inputs`` (Qwen3-Omni: the kept deepstack rows in ``lm_kwargs``) and float M-RoPE
positions in prefill and decode.

Nothing is downloaded: the thinker architecture is built from its configuration with random weights
(timings and memory do not depend on weight values) directly on the GPU in bfloat16
(``Model._from_config(config, dtype=torch.bfloat16)`` under ``with torch.device("cuda")``; the
Qwen3-Omni 30B-A3B thinker is 31.72 B parameters, about 63 GB in bfloat16), and the inputs are synthesised: random ``pixel_values_videos`` and ``input_features`` of the right sizes, and
``input_ids`` laid out exactly as the family's processor lays out a video with its audio track
(audio-in-video). ``Qwen2_5OmniProcessor``: ``<|vision_bos|><|audio_bos|>`` then, per 2-s chunk, the
chunk's video tokens and its audio tokens, then ``<|audio_eos|><|vision_eos|>``.
``Qwen3OmniMoeProcessor``: ``<|vision_start|><|audio_start|>`` then video and audio tokens
merge-sorted by time id (grid step g at ``g * second_per_grid * 13``, audio token i at i, video first
on ties: at 2 fps one grid step then its 13 audio tokens), then ``<|audio_end|><|vision_end|>``.
``tests/model/test_benchmarks_smoke.py`` checks both layouts against the real processors (tiny and
tiny-qwen3 checkpoints). Special token ids come from the model configuration.

Architectures (random weights; the dimensions of the hub checkpoints' ``thinker_config``):

==============  ========================================  ========================================  ========================================
                Qwen2.5-Omni-7B thinker (8.93 B params)   Qwen2.5-Omni-3B thinker (4.70 B params)   Qwen3-Omni-30B-A3B thinker (31.72 B
                                                                                                    params, about 3.3 B active per token)
==============  ========================================  ========================================  ========================================
LLM             28 layers, hidden 3584, 28 heads, 4 KV    36 layers, hidden 2048, 16 heads, 2 KV    48 MoE layers, hidden 2048, 32 heads, 4
                heads, intermediate 18944, vocab 152064,  heads, intermediate 11008, vocab 151936,  KV heads of 128, 128 experts of 768 (8
                untied head, rope_theta 1e6,              untied head, rope_theta 1e6,              active), vocab 152064, untied head,
                mrope_section [16, 24, 24]                mrope_section [16, 24, 24]                rope_theta 1e6, interleaved
                                                                                                    mrope_section [24, 20, 20] (30.53 B
                                                                                                    with embeddings and head)
vision encoder  depth 32, hidden 1280, 16 heads,          same, out_hidden_size 2048                depth 27, hidden 1152, 16 heads,
                intermediate 3420 (SiLU), patch 14,                                                 intermediate 4304, patch 16, temporal
                temporal patch 2, merge 2, window 112,                                              patch 2, merge 2, deepstack after layers
                fullatt_block_indexes [7, 15, 23, 31],                                              8, 16, 24, out_hidden_size 2048
                out_hidden_size 3584                                                                (0.54 B)
audio encoder   32 layers, d_model 1280, 20 heads,        same, output_dim 2048                     32 layers, d_model 1280, 20 heads, ffn
                ffn 5120, 128 mel bins, n_window 100,                                               5120, 128 mel bins, n_window 50 (8-s
                output_dim 3584                                                                     attention windows: n_window_infer 800),
                                                                                                    output_dim 2048 (0.65 B)
==============  ========================================  ========================================  ========================================

Clip: ``--seconds`` of video at ``--fps`` (2) and ``--video-tokens-per-second`` (112 = frames of
224 x 392 px at 2 fps: 16 x 28 patches, 112 LLM tokens per 2-frame grid; Qwen3-Omni's 16-px patches:
256 x 448 px for the same 112 tokens), plus 25 audio tokens per second (Qwen3-Omni: 13; 100 mel
frames per second either way, ``input_features`` ``[1, 128, 100 * seconds]``).

Stages (each: a warm-up, then ``--repeats`` runs; CUDA synchronised around each run;
``torch.cuda.reset_peak_memory_stats()`` before and ``max_memory_allocated()`` after, weights
included; on the CPU the process's peak RSS instead):

* ``vision_encoder`` stock (transformers ``sdpa``: one attention call per window) and fast
  (:mod:`omnizip_cli.models.encoder_attention`: one ``varlen_attn`` call per layer), with an ``equivalence``
  line comparing their outputs (Qwen3-Omni: the post-merger output and the deepstack features);
  ``audio_encoder`` stock and fast, likewise. Where a family's encoders have no fast path the
  ``fast`` runs are stock and the records say so (``fast_applied`` false, ``backend`` "none ...");
* ``saliency``: the last audio-encoder layer with the adapter's recorder
  (:class:`omnizip_cli.models.saliency.AudioSaliencyRecorder`; Qwen3-Omni's windowed) minus
  without it, plus the adapter's ``audio_token_scores`` (its cost over the plain encoder);
* ``keep_plan`` (``build_keep_plan`` through the Session's ``keep_plan``, with the adapter's time
  groups) and ``prune`` (the adapter's ``prefill_inputs`` with the plan) at 45 % and 35 %
  retention of the audio + video tokens (``config_for_retention`` at this clip's token rates);
* ``prefill`` (language model + head on the last position, ``forward_tokens`` of :mod:`omnizip_cli.generation.eager`)
  at full / 45 % / 35 %;
* ``decode``: 32 greedy tokens (one ``forward_tokens`` per token) after the full and the
  35 % prefill;
* ``ttft``: time to first token end to end, from the processor's tensors on the device to the first
  token id on the host: ``stock_full`` (stock encoders, every token), ``fast_35`` (fast encoders +
  saliency + keep plan + pruning + prefill at 35 %) and ``stock_generate`` (transformers'
  ``generate(max_new_tokens=1)`` as users run it today).

Output: JSON lines on stdout, one object per measurement (``kind``: ``setup``, ``clip``, ``stage``,
``equivalence``, ``ratio``; every one with ``model`` and ``family``); progress on stderr. The ``ratio`` lines are the issue's "done when"
figures: ``prefill_full_over_35`` (target >= 2.8), ``ttft_stock_full_over_fast_35`` and
``ttft_stock_generate_over_fast_35`` (>= 2.5), ``compression_over_prefill_full`` ((saliency +
keep plan + prune at 35 %) / full prefill, target < 0.02), ``vision_stock_over_fast`` (>= 2.5).
Ratios use medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402
from benchmarks.thinker_configs import (  # noqa: E402  (after the sys.path set-up)
    SIZES,
    adapter,
    build_model,
    decode_step,
    encode,
    encoders,
    full_thinker_config,
    keep_plan,
    next_position,
    prefill,
    prepared_prompt,
)

BENCH = "model_stages"
FAMILIES = ("qwen2.5", "qwen3")
DEFAULT_SECONDS = (30, 60, 120, 300)
TINY_SECONDS = (4,)
MEL_FRAMES_PER_SECOND = 100
DECODE_TOKENS = 32
RETENTIONS = {"45": 0.45, "35": 0.35}
SYSTEM_TEXT_TOKENS = 20  # "You are a helpful assistant." and the chat template's text around it
QUESTION_TEXT_TOKENS = 16

log, emit = json_lines_output(BENCH)


# ------------------------------------------------------------------------------------------ model


def family_of(config: Any) -> str:
    """``"qwen3"`` for a Qwen3-Omni thinker configuration (``qwen3_omni_moe_thinker``), else ``"qwen2.5"``."""
    return "qwen3" if str(getattr(config, "model_type", "")).startswith("qwen3_omni") else "qwen2.5"


def family_audio_tokens_per_second(config: Any) -> int:
    """Nominal audio tokens per second of the family (25 Qwen2.5-Omni, 13 Qwen3-Omni), from its adapter."""
    from omnizip_cli.models.registry import adapter_for_model_type

    return int(adapter_for_model_type(config.model_type).audio_tokens_per_second)


# ------------------------------------------------------------------------------------------ inputs


def frame_grid(tokens_per_grid: int) -> tuple[int, int]:
    """(rows, cols) of LLM tokens per 2-frame grid, as close to 9:16 as ``tokens_per_grid`` allows."""
    best = None
    for rows in range(1, tokens_per_grid + 1):
        if tokens_per_grid % rows:
            continue
        cols = tokens_per_grid // rows
        score = abs(rows / cols - 9 / 16)
        if best is None or score < best[0]:
            best = (score, rows, cols)
    assert best is not None
    return best[1], best[2]


def chunk_sizes(values: list[float], per_chunk: int) -> list[int]:
    """Sizes of the runs of ``values`` (non-decreasing t positions) that fall in successive chunks.

    The processor's rule: a new chunk starts at the first value >= the current boundary, and the
    boundary then advances by one chunk (so a jump over several boundaries opens one chunk only).
    """
    sizes, start, boundary = [], 0, per_chunk
    for i, value in enumerate(values):
        if value >= boundary:
            sizes.append(i - start)
            start, boundary = i, boundary + per_chunk
    sizes.append(len(values) - start)
    return sizes


def audio_token_count(config: Any, mel_frames: int) -> int:
    """LLM audio tokens of ``mel_frames`` log-mel frames, as the family's processor counts them.

    Qwen2.5-Omni: two stride-2 steps, ``((L - 1) // 2 + 1 - 2) // 2 + 1`` (25 per second). Qwen3-Omni:
    13 per full ``2 * n_window``-frame (1-s) chunk plus three stride-2 convolutions of the rest,
    ``13 * (L // 100) + f(L % 100)`` with ``f(x) = ((((x - 1) // 2 + 1) - 1) // 2 + 1 - 1) // 2 + 1``.
    """
    if family_of(config) == "qwen3":
        chunk = 2 * int(config.audio_config.n_window)
        rest = mel_frames % chunk
        after_first = (rest - 1) // 2 + 1
        return ((after_first - 1) // 2 + 1 - 1) // 2 + 1 + (mel_frames // chunk) * 13
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def media_token_ids(
    config: Any, grid_thw: tuple[int, int, int], second_per_grid: float, audio_tokens: int
) -> list[int]:
    """The audio-in-video block of ``config``'s family, as its processor lays it out.

    Qwen2.5-Omni: ``<|vision_bos|><|audio_bos|>`` + per 2-s chunk (video tokens, audio tokens) +
    ``<|audio_eos|><|vision_eos|>``. Qwen3-Omni: :func:`qwen3_media_token_ids` (merge-sorted by time).
    """
    if family_of(config) == "qwen3":
        return qwen3_media_token_ids(config, grid_thw, second_per_grid, audio_tokens)
    t, h, w = grid_thw
    merge = config.vision_config.spatial_merge_size
    per_grid = (h // merge) * (w // merge)
    per_second = config.position_id_per_seconds
    video_t = [g * second_per_grid * per_second for g in range(t) for _ in range(per_grid)]
    per_chunk = int(per_second * config.seconds_per_chunk)
    video_chunks = chunk_sizes(video_t, per_chunk)
    audio_chunks = chunk_sizes(list(range(audio_tokens)), per_chunk) if audio_tokens else []
    ids = [config.vision_start_token_id, config.audio_start_token_id]
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            ids += [config.video_token_id] * video_chunks[j]
        if j < len(audio_chunks):
            ids += [config.audio_token_id] * audio_chunks[j]
    return ids + [config.audio_end_token_id, config.vision_end_token_id]


def qwen3_media_token_ids(
    config: Any, grid_thw: tuple[int, int, int], second_per_grid: float, audio_tokens: int
) -> list[int]:
    """Qwen3-Omni's audio-in-video block: ``<|vision_start|><|audio_start|>``, then the video and
    audio tokens merge-sorted by time id, then ``<|audio_end|><|vision_end|>``.

    ``Qwen3OmniMoeProcessor``'s rule: grid step ``g`` (its ``h/2 * w/2`` tokens) sits at
    ``g * second_per_grid * position_id_per_seconds`` (13 per second), audio token ``i`` at ``i``,
    video first on ties; what is left of either after the other ends follows. At 2 fps:
    ``[V step 0][A 0-12][V step 1][A 13-25]...``.
    """
    t, h, w = grid_thw
    merge = config.vision_config.spatial_merge_size
    per_grid = (h // merge) * (w // merge)
    per_second = float(config.position_id_per_seconds)
    video_t = [g * second_per_grid * per_second for g in range(t) for _ in range(per_grid)]
    ids = [config.vision_start_token_id, config.audio_start_token_id]
    v = a = 0
    while v < len(video_t) and a < audio_tokens:
        if video_t[v] <= a:
            ids.append(config.video_token_id)
            v += 1
        else:
            ids.append(config.audio_token_id)
            a += 1
    ids += [config.video_token_id] * (len(video_t) - v) + [config.audio_token_id] * (audio_tokens - a)
    return ids + [config.audio_end_token_id, config.vision_end_token_id]


def prompt_token_ids(config: Any, media_ids: list[int], seed: int = 0) -> list[int]:
    """The chat around the media: system turn (Qwen2.5-Omni only: Qwen3-Omni's template has no default
    system prompt), user turn (media, question), assistant prompt.

    Text tokens are random ids below the first special id (their values do not change any timing).
    """
    import torch

    text = config.text_config
    specials = [
        config.audio_token_id, config.video_token_id, config.image_token_id, config.audio_start_token_id,
        config.audio_end_token_id, config.vision_start_token_id, config.vision_end_token_id,
        text.bos_token_id, text.eos_token_id, text.pad_token_id,
    ]
    limit = min(s for s in specials if s is not None)
    g = torch.Generator().manual_seed(seed)

    def words(n: int) -> list[int]:
        return torch.randint(0, limit, (n,), generator=g).tolist()

    im_start, im_end = text.bos_token_id, text.eos_token_id
    newline = words(1)
    system = [im_start] + words(SYSTEM_TEXT_TOKENS) + [im_end] + newline if family_of(config) == "qwen2.5" else []
    return (
        system
        + [im_start] + words(2) + media_ids + words(QUESTION_TEXT_TOKENS) + [im_end] + newline
        + [im_start] + words(2)
    )


@dataclass
class Clip:
    seconds: int
    fps: float
    grid_thw: tuple[int, int, int]
    frame_px: tuple[int, int]
    video_tokens: int
    audio_tokens: int
    inputs: Any  # omnizip_cli.models.base.PreparedPrompt, tensors on the device

    @property
    def tokens(self) -> int:
        return int(self.inputs.input_ids.shape[1])


def synthesize_clip(
    config: Any, seconds: int, fps: float, video_tokens_per_second: int, device: str, seed: int = 0
) -> Clip:
    """Processor-shaped tensors for a clip with random pixels and random log-mel features.

    ``config``: a Qwen2.5-Omni or a Qwen3-Omni thinker configuration (its vision geometry, audio token
    rate and audio-in-video layout are used). Tensors: ``input_ids``/``attention_mask`` ``[1, P]``,
    ``pixel_values_videos`` ``[t*h*w, 3*2*patch**2]``, ``video_grid_thw`` ``[1, 3]``,
    ``video_second_per_grid`` ``[1]``, ``input_features`` ``[1, 128, 100*seconds]``,
    ``feature_attention_mask`` ``[1, 100*seconds]``.
    """
    import torch

    vision = config.vision_config
    frames_per_grid = vision.temporal_patch_size
    second_per_grid = frames_per_grid / fps
    tokens_per_grid = video_tokens_per_second * second_per_grid
    if abs(tokens_per_grid - round(tokens_per_grid)) > 1e-6 or tokens_per_grid < 1:
        raise SystemExit(f"--video-tokens-per-second {video_tokens_per_second} at --fps {fps} is not whole tokens per grid")
    rows, cols = frame_grid(int(round(tokens_per_grid)))
    merge = vision.spatial_merge_size
    grid = (max(1, round(seconds * fps / frames_per_grid)), rows * merge, cols * merge)
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    mel_frames = seconds * MEL_FRAMES_PER_SECOND
    audio_tokens = audio_token_count(config, mel_frames)
    ids = prompt_token_ids(config, media_token_ids(config, grid, second_per_grid, audio_tokens), seed)

    g = torch.Generator().manual_seed(seed)
    tensors = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values_videos": torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=g),
        "video_grid_thw": torch.tensor([grid], dtype=torch.long),
        "video_second_per_grid": torch.tensor([second_per_grid]),
        "input_features": torch.randn(1, config.audio_config.num_mel_bins, mel_frames, generator=g),
        "feature_attention_mask": torch.ones(1, mel_frames, dtype=torch.long),
    }
    tensors = {k: v.to(device) for k, v in tensors.items()}
    inputs = prepared_prompt(tensors, "video+audio")
    video_tokens = grid[0] * rows * cols
    return Clip(
        seconds=seconds,
        fps=fps,
        grid_thw=grid,
        frame_px=(grid[1] * vision.patch_size, grid[2] * vision.patch_size),
        video_tokens=video_tokens,
        audio_tokens=audio_tokens,
        inputs=inputs,
    )


# ------------------------------------------------------------------------------------------ timing


@dataclass
class Measurement:
    runs: list[float]
    peak_memory_bytes: int | None
    memory_kind: str
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


class Timer:
    """Warm-up, then ``repeats`` synchronised runs, with the peak memory of each run."""

    def __init__(self, device: str, repeats: int, warmup: int = 1) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.device = device
        self.repeats = repeats
        self.warmup = warmup

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def run(self) -> Iterator[dict[str, float]]:
        """Time one run of the block (``out["seconds"]``, ``out["peak"]``)."""
        out: dict[str, float] = {}
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        yield out
        self.sync()
        out["seconds"] = time.perf_counter() - started
        out["peak"] = self._peak()

    def _peak(self) -> int:
        if self.cuda:
            return int(self.torch.cuda.max_memory_allocated(self.device))
        from omnizip_cli.measure import process_peak_rss_bytes

        return process_peak_rss_bytes()

    @property
    def memory_kind(self) -> str:
        return "cuda_max_allocated" if self.cuda else "cpu_process_peak_rss"

    def measure(
        self, fn: Callable[..., Any], setup: Callable[[], Any] | None = None, keep_result: bool = False
    ) -> Measurement:
        """Time ``fn(state)`` (``state = setup()`` before each run, untimed, its memory counted) or ``fn()``.

        The previous run's result is released before the next run, so it never inflates a peak;
        the last result is kept only with ``keep_result``.
        """
        runs, peaks, result = [], [], None
        for i in range(self.warmup + self.repeats):
            result = None
            state = setup() if setup is not None else None
            with self.run() as out:
                result = fn(state) if setup is not None else fn()
            del state
            if i >= self.warmup:
                runs.append(out["seconds"])
                peaks.append(int(out["peak"]))
        return Measurement(runs, max(peaks) if peaks else None, self.memory_kind, result if keep_result else None)


# ------------------------------------------------------------------------------------------ stages


def rel_err(x: Any, ref: Any) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def fast_backend_name(model: Any) -> str:
    import torch

    from omnizip_cli.models import encoder_attention as ea

    visual = encoders(model)["vision"]
    probe = torch.empty(1, visual.config.num_heads, visual.config.hidden_size // visual.config.num_heads,
                        device=next(visual.parameters()).device, dtype=next(visual.parameters()).dtype)
    return "varlen_attn" if ea.kernel_supports(probe) else "padded_sdpa_reference"


def float32_encoders(model: Any) -> dict[str, Any]:
    """float32 copies of the (stock) encoders, the reference for the bfloat16 equivalence check."""
    import copy

    thinker = model.model
    return {
        "vision_encoder": copy.deepcopy(thinker.visual).float(),
        "audio_encoder": copy.deepcopy(thinker.audio_tower).float(),
    }


def vision_output(model: Any, out: Any) -> Any:
    """The vision encoder's output compared stock vs fast: ``[N_v, D]`` post-merger embeddings; for
    Qwen3-Omni with its deepstack features concatenated along the last axis, ``[N_v, (1 + k) * D]``.

    ``out``: ``get_video_features``'s output (``pooler_output`` and ``deepstack_features`` split per
    video: tuples) or the vision encoder's own (whole tensors).
    """
    import torch

    def whole(x: Any) -> Any:
        return torch.cat(tuple(x), dim=0) if isinstance(x, (tuple, list)) else x

    video = whole(out.pooler_output)
    if family_of(model.config) != "qwen3":
        return video
    return torch.cat([video, *(whole(layer) for layer in out.deepstack_features)], dim=-1)


def float32_reference_outputs(model: Any, tensors: dict[str, Any], encoders: dict[str, Any]) -> dict[str, Any]:
    """The stock encoders' outputs in float32 (TF32 off), computed as ``get_video/audio_features`` do."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        video = vision_output(model, encoders["vision_encoder"](
            tensors["pixel_values_videos"].float(), grid_thw=tensors["video_grid_thw"]
        ))
        mask = tensors["feature_attention_mask"]
        features = tensors["input_features"].permute(0, 2, 1)[mask.bool()].permute(1, 0)
        lengths = mask.sum(-1)
        if family_of(model.config) == "qwen3":  # the encoder derives its post-CNN lengths itself
            audio = encoders["audio_encoder"](features.float(), feature_lens=lengths).last_hidden_state
        else:
            after_cnn, _ = model.model.audio_tower._get_feat_extract_output_lengths(lengths)
            audio = encoders["audio_encoder"](
                features.float(), feature_lens=lengths, aftercnn_lens=after_cnn
            ).last_hidden_state
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    return {"vision_encoder": video, "audio_encoder": audio}


def equivalence(stock: Any, fast: Any, reference: Any | None) -> dict[str, Any]:
    """How far the fast encoder output is from the stock one, and whether that is within the stated bound.

    float32: relative (Frobenius) error fast vs stock below 1e-5. bfloat16 (with the float32 stock
    output as reference): the fast path's error against the float32 output at most 1.5x the stock
    bfloat16 path's own error against it, plus 1e-3 (the fast path is as accurate as stock).
    """
    import torch

    out: dict[str, Any] = {
        "dtype": str(stock.dtype).replace("torch.", ""),
        "rel_err": rel_err(fast, stock),
        "max_abs_err": float((fast.float() - stock.float()).abs().max()),
    }
    if stock.dtype == torch.float32 or reference is None:
        out.update(bound=1e-5 if stock.dtype == torch.float32 else None, criterion="rel_err(fast, stock) < bound")
        out["within_bound"] = out["rel_err"] < out["bound"] if out["bound"] is not None else None
        return out
    fast_err, stock_err = rel_err(fast, reference), rel_err(stock, reference)
    bound = 1.5 * stock_err + 1e-3
    out.update(
        rel_err_fast_vs_float32=fast_err, rel_err_stock_vs_float32=stock_err, bound=bound,
        criterion="rel_err(fast, float32) <= 1.5 * rel_err(stock, float32) + 1e-3",
        within_bound=fast_err <= bound,
    )
    return out


def run_clip(
    model: Any, clip: Clip, timer: Timer, args: argparse.Namespace, common: dict[str, Any],
    reference_encoders: dict[str, Any] | None = None,
) -> None:
    import torch

    from omnizip_cli.compression import config_for_retention
    from omnizip_cli.models import encoder_attention as ea

    family = adapter(model)
    audio_rate = family_audio_tokens_per_second(model.config)

    thinker = model.model
    tensors = clip.inputs.tensors
    base = dict(common, clip_seconds=clip.seconds, tokens=clip.tokens)
    stage_seconds: dict[str, Measurement] = {}

    def record(stage: str, variant: str | None, m: Measurement, **extra: Any) -> Measurement:
        stage_seconds[f"{stage}/{variant}" if variant else stage] = m
        emit(dict(
            base, kind="stage", stage=stage, variant=variant, best_s=m.best, median_s=m.median, runs_s=m.runs,
            peak_memory_bytes=m.peak_memory_bytes, memory_kind=m.memory_kind, **extra,
        ))
        log(f"{clip.seconds:>4}s {stage:<16} {variant or '':<15} median {m.median * 1e3:9.2f} ms")
        return m

    def timed(stage: str, variant: str | None, fn: Callable[[], Any], **extra: Any) -> Any:
        """Record the stage and return the last run's result."""
        m = timer.measure(fn, keep_result=True)
        result, m.result = m.result, None
        record(stage, variant, m, **extra)
        return result

    fast = lambda: ea.fast_encoder_attention(encoders(model), force=True)  # noqa: E731
    with fast() as fast_applied:  # False: the family's encoders have no fast path; "fast" then runs stock
        fast_applied = bool(fast_applied)
    backend = fast_backend_name(model) if fast_applied else "none (fast path not applicable: stock attention)"

    # --- encoders, stock vs fast, with equivalence of their outputs
    def vision() -> torch.Tensor:
        # Qwen3-Omni: the deepstack features come out of the same call (the adapter keeps them)
        return vision_output(model, thinker.get_video_features(tensors["pixel_values_videos"], tensors["video_grid_thw"]))

    def audio() -> torch.Tensor:
        return thinker.get_audio_features(tensors["input_features"], tensors["feature_attention_mask"]).last_hidden_state

    with torch.no_grad():
        outputs = {}
        for name, fn, count in (("vision_encoder", vision, clip.video_tokens), ("audio_encoder", audio, clip.audio_tokens)):
            stock_out = timed(name, "stock", fn, output_tokens=count)
            with fast():
                fast_out = timed(name, "fast", fn, output_tokens=count, backend=backend)
            outputs[name] = (stock_out, fast_out)
        references = float32_reference_outputs(model, tensors, reference_encoders) if reference_encoders else {}
        for name, (stock_out, fast_out) in outputs.items():
            emit(dict(base, kind="equivalence", what=name, backend=backend, fast_applied=fast_applied,
                      **equivalence(stock_out, fast_out, references.get(name))))
        del outputs, references

        # --- saliency: the recorder's cost. Its pre-hook runs inside the last audio layer's attention,
        # so that module is timed alone, on the inputs it gets in the encoder, with and without it.
        attention = thinker.audio_tower.layers[-1].self_attn
        captured: dict[str, Any] = {}
        handle = attention.register_forward_pre_hook(
            lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
        )
        try:
            with fast():
                audio()
        finally:
            handle.remove()

        feature_mask = tensors["feature_attention_mask"]

        def last_layer_with_saliency() -> Any:  # the adapter's recorder and token scores
            with family.saliency_recorder(thinker.audio_tower) as recorder:
                attention(**captured)
            return family.audio_token_scores(model, recorder, feature_mask, clip.audio_tokens)

        with fast():
            plain = timer.measure(lambda: attention(**captured))
            hooked = timer.measure(last_layer_with_saliency)
        saliency = Measurement(  # each run with the recorder, minus the plain module's median
            [max(0.0, run - plain.median) for run in hooked.runs], hooked.peak_memory_bytes, hooked.memory_kind,
        )
        record("saliency", None, saliency, frames=int(captured["hidden_states"].shape[0]),
               last_layer_attention_median_s=plain.median, with_recorder_median_s=hooked.median,
               method=("last audio layer's attention with the adapter's saliency_recorder (an "
                       "AudioSaliencyRecorder) + audio_token_scores, minus the same module without it (fast "
                       "attention in both)"))
        del captured

        # --- the encoded prompt (fast encoders + saliency), keep plans, pruning
        with fast():
            encoded = encode(model, clip.inputs, record_saliency=True)
        prefills = {"full": family.prefill_inputs(encoded, None)}
        plans = {}
        for label, retention in RETENTIONS.items():
            config = config_for_retention(
                retention, audio_tokens_per_second=audio_rate,
                video_tokens_per_second=args.video_tokens_per_second,
            )
            plan = timed("keep_plan", label, lambda: keep_plan(model, encoded, config))
            pruned = timed("prune", label, lambda: family.prefill_inputs(encoded, plan))
            plans[label] = (config, plan)
            prefills[label] = pruned
            emit(dict(
                base, kind="clip", what="retention", variant=label, rho_audio=config.rho_audio,
                rho_video=config.rho_video, retention_audio_video=plan.retention, prefill_tokens=pruned.length,
                audio_kept=plan.audio_kept, video_kept=plan.video_kept,
            ))

        # --- LLM prefill (head on the last position)
        for label, pre in prefills.items():
            record("prefill", label, timer.measure(lambda: prefill(model, pre)), prefill_tokens=pre.length)

        # --- decode of DECODE_TOKENS greedy tokens after the full and the 35 % prefill
        for label in ("full", "35"):
            pre = prefills[label]

            def start(pre=pre) -> Any:
                logits, cache = prefill(model, pre)
                timer.sync()
                return logits.argmax(-1, keepdim=True), cache

            def steps(state: Any, pre=pre) -> int:
                token, cache = state
                mask = pre.attention_mask
                for i in range(args.decode_tokens):
                    mask = torch.cat([mask, mask.new_ones((1, 1))], dim=-1)
                    token = decode_step(model, token, next_position(pre) + i, mask, cache).argmax(-1, keepdim=True)
                return int(token)

            m = record("decode", label, timer.measure(steps, setup=start), new_tokens=args.decode_tokens,
                       context_tokens=pre.length)
            emit(dict(base, kind="clip", what="decode_rate", variant=label,
                      tokens_per_second=args.decode_tokens / m.median, ms_per_token=m.median / args.decode_tokens * 1e3))
        del prefills, plans, encoded

        # --- time to first token, end to end (processor tensors on the device -> first token id on the host)
        config_35 = config_for_retention(
            RETENTIONS["35"], audio_tokens_per_second=audio_rate,
            video_tokens_per_second=args.video_tokens_per_second,
        )

        def ttft_stock_full() -> int:
            encoded = encode(model, clip.inputs)
            logits, _ = prefill(model, family.prefill_inputs(encoded, None))
            return int(logits.argmax(-1))

        def ttft_fast_35() -> int:
            with fast():
                encoded = encode(model, clip.inputs, record_saliency=True)
            plan = keep_plan(model, encoded, config_35)
            logits, _ = prefill(model, family.prefill_inputs(encoded, plan))
            return int(logits.argmax(-1))

        def ttft_stock_generate() -> int:
            out = model.generate(**clip.inputs.tensors, use_audio_in_video=True, max_new_tokens=1, do_sample=False)
            return int(out[0, -1])

        record("ttft", "stock_full", timer.measure(ttft_stock_full),
               path="stock sdpa encoders + all tokens + prefill (head on last position)")
        record("ttft", "fast_35", timer.measure(ttft_fast_35),
               path="fast encoders + saliency + keep plan + prune + prefill at 35 %")
        if not args.no_stock_generate:
            record("ttft", "stock_generate", timer.measure(ttft_stock_generate),
                   path="transformers generate(max_new_tokens=1, use_audio_in_video=True)")

    # --- the "done when" ratios (medians)
    def med(key: str) -> float:
        return stage_seconds[key].median

    def ratio(name: str, value: float, target: float | None, comparison: str, formula: str) -> None:
        meets = None
        if target is not None:
            meets = value >= target if comparison == ">=" else (value < target if comparison == "<" else value <= target)
        emit(dict(base, kind="ratio", name=name, value=value, target=target, comparison=comparison,
                  meets_target=meets, formula=formula, statistic="median"))
        log(f"{clip.seconds:>4}s {name:<36} {value:8.3f}  (target {comparison} {target})")

    ratio("prefill_full_over_35", med("prefill/full") / med("prefill/35"), 2.8, ">=", "prefill/full / prefill/35")
    ratio("prefill_full_over_45", med("prefill/full") / med("prefill/45"), None, "", "prefill/full / prefill/45")
    ratio("ttft_stock_full_over_fast_35", med("ttft/stock_full") / med("ttft/fast_35"), 2.5, ">=",
          "ttft/stock_full / ttft/fast_35")
    if not args.no_stock_generate:
        ratio("ttft_stock_generate_over_fast_35", med("ttft/stock_generate") / med("ttft/fast_35"), 2.5, ">=",
              "ttft/stock_generate / ttft/fast_35")
    ratio("compression_over_prefill_full",
          (med("saliency") + med("keep_plan/35") + med("prune/35")) / med("prefill/full"), 0.02, "<",
          "(saliency + keep_plan/35 + prune/35) / prefill/full")
    ratio("keep_plan_and_saliency_over_prefill_full", (med("saliency") + med("keep_plan/35")) / med("prefill/full"),
          0.02, "<", "(saliency + keep_plan/35) / prefill/full")
    ratio("vision_stock_over_fast", med("vision_encoder/stock") / med("vision_encoder/fast"), 2.5, ">=",
          "vision_encoder/stock / vision_encoder/fast")
    ratio("audio_stock_over_fast", med("audio_encoder/stock") / med("audio_encoder/fast"), None, "",
          "audio_encoder/stock / audio_encoder/fast")
    if timer.cuda:
        full_peak = stage_seconds["ttft/stock_full"].peak_memory_bytes or 0
        fast_peak = stage_seconds["ttft/fast_35"].peak_memory_bytes or 0
        ratio("peak_memory_fast_35_over_stock_full", fast_peak / full_peak if full_peak else float("nan"), 1.0, "<=",
              "peak(ttft/fast_35) / peak(ttft/stock_full)")


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="qwen2.5",
                        help="model family: qwen2.5 (Qwen2.5-Omni 7B/3B, default) or qwen3 (Qwen3-Omni 30B-A3B)")
    parser.add_argument("--tiny", action="store_true", help="tiny dimensions on the CPU (CI smoke test)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="Qwen2.5-Omni thinker architecture (default 7b; not with --family qwen3: one size, 30B-A3B)")
    parser.add_argument("--seconds", type=int, nargs="+", default=None,
                        help=f"clip lengths, 1..300 s (default {' '.join(map(str, DEFAULT_SECONDS))}; "
                             f"--tiny: {' '.join(map(str, TINY_SECONDS))})")
    parser.add_argument("--fps", type=float, default=2.0, help="video frames per second (default 2)")
    parser.add_argument("--video-tokens-per-second", type=int, default=112,
                        help="LLM video tokens per second of video (default 112 = 224x392 frames at 2 fps)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per stage after a warm-up (default 3; --tiny 2)")
    parser.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS, help="tokens decoded per decode run (default 32)")
    parser.add_argument("--device", default=None, help="cuda (default) or cuda:N; --tiny runs on cpu unless given")
    parser.add_argument("--no-stock-generate", action="store_true", help="skip the stock generate() time to first token")
    args = parser.parse_args(argv)
    if args.family == "qwen3" and args.size is not None:
        parser.error("--size is for --family qwen2.5; --family qwen3 builds the Qwen3-Omni 30B-A3B thinker")
    args.size = args.size or ("7b" if args.family == "qwen2.5" else None)
    args.seconds = args.seconds or list(TINY_SECONDS if args.tiny else DEFAULT_SECONDS)
    if any(not 1 <= s <= 300 for s in args.seconds):
        parser.error("--seconds must be between 1 and 300")
    args.repeats = args.repeats or (2 if args.tiny else 3)
    if args.repeats < 1 or args.decode_tokens < 1:
        parser.error("--repeats and --decode-tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if args.family == "qwen3":
            what = "Qwen3-Omni 30B-A3B thinker (about 31.7 B parameters, 63 GB in bfloat16)"
        else:
            what = (f"{args.size} thinker (about {'9' if args.size == '7b' else '5'} B parameters, "
                    f"{'18' if args.size == '7b' else '9.4'} GB in bfloat16)")
        print(
            f"{BENCH}: no CUDA GPU here. The full-size {what} "
            "is benchmarked on a GPU only; run with --tiny for the CPU smoke test.",
            file=sys.stderr,
        )
        return 2
    if args.family == "qwen3":
        from benchmarks.qwen3_configs import qwen3_omni_30b_a3b_thinker_config
        from omnizip_cli.models.qwen3_omni import ADAPTER as QWEN3

        if args.tiny:
            config, model_name, dtype = QWEN3.tiny_thinker_config(), "tiny-qwen3", torch.float32
        else:
            config, model_name, dtype = qwen3_omni_30b_a3b_thinker_config(), "qwen3-omni-30b-a3b-thinker", torch.bfloat16
    elif args.tiny:
        config, model_name, dtype = adapter().tiny_thinker_config(), "tiny", torch.float32
    else:
        config, model_name, dtype = full_thinker_config(args.size), f"qwen2.5-omni-{args.size}-thinker", torch.bfloat16
    if device.startswith("cuda"):
        if device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
        torch.cuda.set_device(torch.device(device))

    started = time.perf_counter()
    model = build_model(config, device, dtype)
    timer = Timer(device, args.repeats)
    timer.sync()
    build_seconds = time.perf_counter() - started

    import transformers

    from omnizip_cli.models import encoder_attention as ea

    params = sum(p.numel() for p in model.parameters())
    common = dict(model=model_name, family=args.family, device=device, dtype=str(dtype).replace("torch.", ""))
    setup = dict(
        common, kind="setup", parameters=params,
        parameters_by_part={
            "language_model": sum(p.numel() for p in model.model.language_model.parameters()),
            "lm_head": model.lm_head.weight.numel(),
            "vision_encoder": sum(p.numel() for p in model.model.visual.parameters()),
            "audio_encoder": sum(p.numel() for p in model.model.audio_tower.parameters()),
        },
        build_seconds=build_seconds, repeats=args.repeats, warmup=1, fps=args.fps,
        video_tokens_per_second=args.video_tokens_per_second,
        audio_tokens_per_second=family_audio_tokens_per_second(config),
        torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
        cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        cpu_count=os.cpu_count(), fast_attention_backend=fast_backend_name(model),
        fast_attention_policy=ea.fast_attention_decision(encoders(model)).reason,
        weights_bytes=torch.cuda.memory_allocated(device) if device.startswith("cuda") else None,
    )
    emit(setup)
    log(f"{model_name}: {params / 1e9:.2f} B parameters on {device} ({setup['dtype']}), built in {build_seconds:.1f} s")

    reference_encoders = float32_encoders(model) if device.startswith("cuda") and dtype != torch.float32 else None
    for seconds in args.seconds:
        clip = synthesize_clip(config, seconds, args.fps, args.video_tokens_per_second, device)
        emit(dict(
            common, kind="clip", what="inputs", clip_seconds=seconds, tokens=clip.tokens, video_tokens=clip.video_tokens,
            audio_tokens=clip.audio_tokens, video_grid_thw=clip.grid_thw, frame_px=clip.frame_px, fps=clip.fps,
            vision_patches=clip.grid_thw[0] * clip.grid_thw[1] * clip.grid_thw[2],
        ))
        run_clip(model, clip, timer, args, common, reference_encoders)
        del clip
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
