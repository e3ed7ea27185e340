"""Baselines at OmniZip's token budget: ``frames@R``, ``pixels@R`` and ``random@R``.

**The matching rule** (``frames@R`` and ``pixels@R``). The full run of a clip has ``A`` audio and
``V`` video tokens. The target is ``R * (A + V)`` audio+video tokens. Audio does not change with
the frame count or size, so the video side must shrink to about ``R * (A + V) - A``:

* ``frames@R`` samples fewer frames (``--max-frames n``, every other option as the full run): of
  the even counts ``n`` from 2 to the full run's frames, the one whose predicted audio+video tokens
  are closest to the target (the larger on a tie);
* ``pixels@R`` keeps the frame count and lowers ``--max-pixels`` (and ``--min-pixels`` with it
  where it would be above) to ``k`` token cells, ``k`` from 1 to the full frame's cells: the one
  closest to the target, the larger on a tie.

The prediction uses the media package's own sizing (:mod:`omnizip_cli.media.sizing`) on the full
run's source size and rotation, so it is what the decoder will produce. When the audio alone is
above the target, the smallest candidate is taken; the realized retention (recorded per item:
the setting's audio+video tokens over the full run's) says how far it landed.

**random@R** keeps exactly the audio and video token counts of OmniZip's plan at retention ``R``
for the same clip, drawn uniformly per modality with a seed derived from the video's name and the
setting (:func:`seed_for`): no merge, no time groups. It is applied through the same prefill path
as OmniZip (a :class:`~omnizip_cli.compression.KeepPlan` with no merged anchors).

The functions here are pure; torch is imported inside the ones that build tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from omnizip_cli.compression import KeepPlan
    from omnizip_cli.media import MediaOptions

__all__ = ["ClipLayout", "MediaMatch", "match_media", "random_keep_mask", "random_plan", "seed_for"]


@dataclass(frozen=True)
class ClipLayout:
    """What the matching rule needs from a clip's full run.

    audio_tokens, video_tokens: ``A`` and ``V`` of the full run. frames: frames sampled.
    frame_height, frame_width: the full run's frame size (multiples of ``token_pixels``).
    source_height, source_width, rotation: the stored picture and its display rotation (degrees),
    None when unknown (the frame size is then used as the source).
    token_pixels: the side of one LLM video token cell (28 for Qwen2.5-Omni, 32 for Qwen3-Omni).
    """

    audio_tokens: int
    video_tokens: int
    frames: int
    frame_height: int
    frame_width: int
    source_height: int | None = None
    source_width: int | None = None
    rotation: int = 0
    token_pixels: int = 28

    @classmethod
    def from_summary(cls, summary: Any, audio_tokens: int, video_tokens: int, token_pixels: int) -> ClipLayout:
        """From a :class:`~omnizip_cli.media.MediaSummary` and the full run's token counts."""
        return cls(audio_tokens=audio_tokens, video_tokens=video_tokens, frames=int(summary.frames_sampled),
                   frame_height=int(summary.frame_height), frame_width=int(summary.frame_width),
                   source_height=summary.source_height, source_width=summary.source_width,
                   rotation=int(summary.rotation or 0), token_pixels=token_pixels)


@dataclass(frozen=True)
class MediaMatch:
    """The media options a ``frames@R`` / ``pixels@R`` setting opens the clip with.

    options: the :class:`~omnizip_cli.media.MediaOptions`. frames, frame_height, frame_width: what
    they are predicted to sample. predicted_tokens: audio+video tokens predicted.
    predicted_retention: ``predicted_tokens / (A + V)``.
    """

    options: MediaOptions
    frames: int
    frame_height: int
    frame_width: int
    predicted_tokens: int
    predicted_retention: float

    def describe(self) -> dict[str, Any]:
        """What a prediction record keeps of it (JSON)."""
        return {"frames": self.frames, "frame_height": self.frame_height, "frame_width": self.frame_width,
                "max_frames": self.options.max_frames, "max_pixels": self.options.max_pixels,
                "min_pixels": self.options.min_pixels}


def _frame_size(layout: ClipLayout, options: MediaOptions, frames: int) -> tuple[int, int]:
    """The frame size ``options`` give ``frames`` frames of this clip, as the decoder computes it."""
    from omnizip_cli.media import sizing

    budget = sizing.frame_pixel_budget(frames, options.min_pixels, options.max_pixels, options.effective_total_pixels)
    if layout.source_height and layout.source_width:
        turns = round(layout.rotation / 90) % 4
        return sizing.output_size(layout.source_height, layout.source_width, turns, options.min_pixels, budget,
                                  layout.token_pixels)
    return sizing.smart_resize(layout.frame_height, layout.frame_width, layout.token_pixels, options.min_pixels,
                               budget)


def match_media(layout: ClipLayout, media: MediaOptions, method: str, retention: float) -> MediaMatch:
    """The media options of ``frames@R`` or ``pixels@R`` for this clip (see the module docstring).

    ``media``: the full run's options. Raises ``ValueError`` for another method or a clip without video.
    """
    if method not in ("frames", "pixels"):
        raise ValueError(f"match_media is for frames or pixels, not {method!r}")
    if layout.frames < 2 or layout.video_tokens <= 0:
        raise ValueError("a frames@/pixels@ setting needs a video track")
    f = layout.token_pixels
    full_options_size = _frame_size(layout, media, layout.frames)
    if full_options_size != (layout.frame_height, layout.frame_width):  # the source facts disagree: use the frames
        layout = dataclasses.replace(layout, source_height=None, source_width=None, rotation=0)
    full_cells = (layout.frame_height // f) * (layout.frame_width // f)
    per_cell_pair = layout.video_tokens / ((layout.frames // 2) * full_cells)  # 1 for the Qwen omni models
    total = layout.audio_tokens + layout.video_tokens
    target = retention * total
    candidates: list[tuple[MediaOptions, int, tuple[int, int]]] = []
    if method == "frames":
        for n in range(2, layout.frames + 1, 2):
            options = dataclasses.replace(media, max_frames=n)
            candidates.append((options, n, _frame_size(layout, options, n)))
    else:
        for k in range(1, full_cells + 1):
            pixels = k * f * f
            options = dataclasses.replace(media, max_pixels=pixels, min_pixels=min(media.min_pixels, pixels))
            candidates.append((options, layout.frames, _frame_size(layout, options, layout.frames)))
    best: tuple[float, int, MediaMatch] | None = None
    for options, frames, (height, width) in candidates:
        video = round((frames // 2) * (height // f) * (width // f) * per_cell_pair)
        tokens = layout.audio_tokens + video
        match = MediaMatch(options=options, frames=frames, frame_height=height, frame_width=width,
                           predicted_tokens=tokens, predicted_retention=tokens / total)
        distance = abs(tokens - target)
        if best is None or distance < best[0] or (distance == best[0] and tokens > best[1]):
            best = (distance, tokens, match)
    assert best is not None
    return best[2]


def seed_for(video_name: str, setting_key: str) -> int:
    """The seed of a random drop: stable across runs, processes and machines (not Python's ``hash``)."""
    digest = hashlib.sha256(f"{video_name}\0{setting_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_keep_mask(input_ids: torch.Tensor, *, audio_token_id: int, video_token_id: int, audio_kept: int,
                     video_kept: int, seed: int) -> torch.Tensor:
    """``[L]`` bool: every non-media token, and ``audio_kept`` audio and ``video_kept`` video tokens
    drawn uniformly without replacement (a CPU generator seeded with ``seed``, so the draw does not
    depend on the device). ``input_ids``: ``[L]`` (or ``[1, L]``). The mask is on ``input_ids``' device.

    Raises ``ValueError`` when a count is negative or above the tokens of its modality.
    """
    import torch

    ids = input_ids.reshape(-1).cpu()
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    generator = torch.Generator().manual_seed(int(seed))
    for token_id, kept, name in ((audio_token_id, audio_kept, "audio"), (video_token_id, video_kept, "video")):
        positions = torch.nonzero(ids == token_id).reshape(-1)
        if not 0 <= kept <= positions.numel():
            raise ValueError(f"cannot keep {kept} of {positions.numel()} {name} tokens")
        order = torch.randperm(positions.numel(), generator=generator)
        keep[positions[order[kept:]]] = False
    return keep.to(input_ids.device)


def random_plan(input_ids: torch.Tensor, reference: KeepPlan, *, audio_token_id: int, video_token_id: int,
                seed: int, hidden_size: int, dtype: torch.dtype) -> KeepPlan:
    """A :class:`~omnizip_cli.compression.KeepPlan` keeping, at random, exactly ``reference``'s
    audio and video counts (:func:`random_keep_mask`); no merged anchors, one summary group.

    ``input_ids``: ``[L]``; ``hidden_size``, ``dtype``: of the embeddings (for the empty
    ``merged_embeds`` ``[0, D]``).
    """
    import torch

    from omnizip_cli.compression import KeepPlan
    from omnizip_cli.compression.plan import GroupStats

    video_kept = reference.video_kept
    keep = random_keep_mask(input_ids, audio_token_id=audio_token_id, video_token_id=video_token_id,
                            audio_kept=reference.audio_kept, video_kept=video_kept, seed=seed)
    device = keep.device
    video_total = reference.video_total
    drop = 1.0 - video_kept / video_total if video_total else 0.0

    def one(value: float | int | bool, kind: torch.dtype) -> torch.Tensor:
        return torch.tensor([value], dtype=kind, device=device)

    groups = GroupStats(audio_tokens=one(reference.audio_total, torch.long),
                        audio_kept=one(reference.audio_kept, torch.long),
                        video_tokens=one(video_total, torch.long), video_drop_ratio=one(drop, torch.float64),
                        video_kept=one(video_kept, torch.long), guided=one(False, torch.bool))
    return KeepPlan(keep=keep, merged_positions=torch.zeros(0, dtype=torch.long, device=device),
                    merged_embeds=torch.zeros((0, hidden_size), dtype=dtype, device=device), groups=groups,
                    audio_total=reference.audio_total, audio_kept=reference.audio_kept, video_total=video_total)
