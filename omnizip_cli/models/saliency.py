"""Audio saliency: the attention each audio token receives in the last audio-encoder layer.

What is computed (``shared/docs/method.md`` §1, "Audio attention scores")
-------------------------------------------------------------------------
In the **last** layer of the Qwen2.5-Omni audio encoder, from the same LayerNormed hidden states
``h [T, D]`` its attention module receives, ``q = q_proj(h)`` and ``k = k_proj(h)`` are reshaped to
``[H, T, d]`` and::

    frame_scores[j] = 1/(H*T) * sum_{h, i} softmax_j(q[h, i] . k[h, :] * d**-0.5)

i.e. the attention received by each post-CNN frame (key), averaged over heads and over **all**
queries. One row sums to 1, so ``frame_scores`` sums to 1. The frames are then paired down to the
LLM's audio tokens (25 per second) the way the encoder pools them (``AvgPool1d(2, 2)``): per audio,
drop the last frame when the audio has an odd number of frames, then average consecutive pairs.
Score ``i`` belongs to the ``i``-th ``<|AUDIO|>`` token of ``input_ids``.

Deliberate choices (each one checked in ``tests/model/test_saliency.py``):

* **Global softmax, ignoring ``cu_seqlens``.** The encoder itself attends only inside 2-second
  windows (``n_window * 2`` mel frames = 100 post-CNN frames); the reference scores globally, over
  all T frames of the call, and so do we (parity with the reference's rankings). With several audios
  in one call, the softmax therefore also spans all of them, as in the reference.
* **Per-audio pairing.** The reference pairs frames globally over the concatenation of all audios,
  which misaligns scores and tokens after an audio with an odd frame count. We pair per audio, with
  the per-audio frame lengths (exactly the encoder's own pooling), so the token count always equals
  the number of ``<|AUDIO|>`` tokens. With one audio (the normal case) both agree.
* **float32 arithmetic.** ``q`` and ``k`` come from the module's own projections (the model's dtype:
  the very q/k the model attends with), and the scores, softmax and column sums are computed and
  accumulated in float32. The reference runs its per-chunk ``q k^T`` and softmax in bfloat16; we
  deviate for accuracy (bf16 keeps 8 significant bits: a logit near 10 is rounded by up to 0.03,
  i.e. ~3 % on its probability). Rankings are nearly identical; values differ at bf16 rounding
  level. Against a float64 computation the float32 result is within ~1e-6 relative.

Long audio: windowed softmax past :data:`GLOBAL_SALIENCY_MAX_FRAMES`
-------------------------------------------------------------------
The global softmax costs ``H * T**2 * d`` multiply-adds: about 7.6 s for 5 min of audio on 2 CPU
cores, 146 s for 30 min, 2 h would take hours. Up to :data:`GLOBAL_SALIENCY_MAX_FRAMES` post-CNN
frames (15,000 = 300 s, the Whisper feature extractor's default window, i.e. the longest audio the
stock processor takes) the scores are the global ones above, bit for bit as before. Past it, each
query's softmax runs only over the keys of its own **attention window**, the ``cu_seqlens`` windows
the encoder's layer itself attends within (``n_window * 2`` = 200 mel frames = 100 post-CNN frames
= 2 s of audio = 50 LLM audio tokens, read from the call's own ``cu_seqlens``), as the OmniZip
authors do for Qwen3-Omni::

    frame_scores[j] = 1/(H*T) * sum_{h, i in window(j)} softmax_{window(j)}(q[h, i] . k[h, :] * d**-0.5)[j]

This is the attention the layer really computes (the global one is a counterfactual), each row
still sums to 1 so ``frame_scores`` still sums to 1, and the cost is linear: ``H * T * W * d``
(W = 100), 90x less than the global softmax at 30 min. Rankings then compare tokens by how much
their own 2-s neighbourhood attends to them, which spreads the kept audio more evenly over a long
clip. Without ``cu_seqlens`` (a hook call that does not pass them) windows of
:data:`FALLBACK_WINDOW_FRAMES` (100) consecutive frames are used. The threshold is the recorder's
``global_max_frames`` argument (None: always global, the behaviour before).

How (no attention weights from transformers, no eager attention, no class patching)
-----------------------------------------------------------------------------------
:class:`AudioSaliencyRecorder` registers a removable forward **pre-hook** (``with_kwargs=True``) on
``audio_tower.layers[-1].self_attn``. The hook only observes: it recomputes q/k from the hidden
states it is handed and returns ``None``, so the module's inputs and its output are untouched, and it
works whatever the attention implementation (``sdpa``, ``flash_attention_2``, ``eager``, or the fast
varlen function of :mod:`omnizip_cli.models.encoder_attention`).

Memory: :func:`frame_attention_received` never builds the ``[H, T, T]`` matrix. It walks groups of
``head_chunk`` heads and blocks of ``query_chunk`` queries; each block holds its queries' scores
against **all** T keys, so the per-query log-sum-exp over all keys (pass 1) and the column sums of
``exp(s - lse)`` (pass 2) are both taken from that one block, in place: one ``q @ k^T`` per block
instead of two, and the softmax stays global and exact. Peak extra memory (bytes) is bounded by
:func:`attention_received_peak_bytes`::

    4 * (hc*qc*T + 2*hc*T*d + hc*T + 4*hc*qc + 3*T)      hc = head_chunk, qc = query_chunk

dominated by ``4*hc*qc*T``, the block of float32 scores. For a 300 s clip (T = 15,000, H = 20,
d = 64) with the recorder's defaults (qc = 256; hc from the score budget of
:func:`default_head_chunk`: 1 head on the CPU, 4 on a GPU) that is 23.3 MB on the CPU (measured
in ``benchmarks/saliency_memory.py``: 23.2 MB of tensors; peak RSS +15 to +27 MB, the excess being
allocator and BLAS workspace) and 92.6 MB on a GPU, against 18 GB for the full float32
``[H, T, T]`` matrix. The hook itself adds the two projections ``q_proj(h)``, ``k_proj(h)``
(``2*T*D`` elements of the model's dtype), the same size as the projections the attention module
computes right after it.

No host synchronisation: the loops run over Python ints derived from shapes; nothing is read back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "AudioSaliencyRecorder",
    "CPU_SCORE_BUDGET_BYTES",
    "DEFAULT_QUERY_CHUNK",
    "FALLBACK_WINDOW_FRAMES",
    "GLOBAL_SALIENCY_MAX_FRAMES",
    "GPU_SCORE_BUDGET_BYTES",
    "attention_received_peak_bytes",
    "default_head_chunk",
    "frame_attention_received",
    "pair_frames_to_tokens",
    "windowed_attention_received",
]

#: Longest audio (post-CNN frames, 50 per second) scored with the global softmax: 300 s.
GLOBAL_SALIENCY_MAX_FRAMES = 15_000
#: Window of the windowed scores when the call passes no ``cu_seqlens`` (the encoder's own size).
FALLBACK_WINDOW_FRAMES = 100

DEFAULT_QUERY_CHUNK = 256
# Budget for the block of float32 scores [head_chunk, query_chunk, T] when head_chunk is not given.
# On the CPU the block should stay cache-friendly: at 300 s (T = 15,000, H = 20, 1 thread) a 15 MB
# block (1 head) takes 8.1 s, a 61 MB block (4 heads) 17.6 s. On a GPU bigger blocks mean fewer
# kernel launches, and 64 MiB is nothing next to the model.
CPU_SCORE_BUDGET_BYTES = 16 * 2**20
GPU_SCORE_BUDGET_BYTES = 64 * 2**20
_F32 = 4  # bytes per float32 element


def default_head_chunk(num_heads: int, num_frames: int, query_chunk: int, *,
                       device: torch.device | str = "cpu", budget_bytes: int | None = None) -> int:
    """Largest head group whose float32 score block ``[hc, query_chunk, T]`` fits the budget.

    The budget is ``budget_bytes``, else ``CPU_SCORE_BUDGET_BYTES`` (16 MiB) on the CPU and
    ``GPU_SCORE_BUDGET_BYTES`` (64 MiB) elsewhere. At least 1 (one head's block exceeds the budget
    for very long audio: lower ``query_chunk`` then), at most ``num_heads``.
    """
    if budget_bytes is None:
        budget_bytes = CPU_SCORE_BUDGET_BYTES if torch.device(device).type == "cpu" else GPU_SCORE_BUDGET_BYTES
    per_head = _F32 * max(1, query_chunk) * max(1, num_frames)
    return max(1, min(num_heads, budget_bytes // per_head))


def attention_received_peak_bytes(num_heads: int, num_frames: int, head_dim: int, *,
                                  query_chunk: int, head_chunk: int) -> int:
    """Upper bound on the extra bytes :func:`frame_attention_received` holds at once.

    ``4 * (hc*qc*T + 2*hc*T*d + hc*T + 4*hc*qc + 3*T)`` with ``hc = min(head_chunk, H)`` and
    ``qc = min(query_chunk, T)``:

    * ``hc*qc*T``: the block of float32 scores (the dominant term);
    * ``2*hc*T*d``: float32 copies of the group's queries (pre-scaled) and keys;
    * ``hc*T``: the group's column sums before they are added over heads;
    * ``4*hc*qc``: per-query max, row sum, its reciprocal and a spare;
    * ``3*T``: the float32 accumulator, the result and one reduction temporary.

    Not counted: the inputs ``q`` and ``k`` themselves (the caller's), and the inside of BLAS calls.
    """
    hc = max(1, min(head_chunk, num_heads))
    qc = max(1, min(query_chunk, num_frames))
    t, d = num_frames, head_dim
    return _F32 * (hc * qc * t + 2 * hc * t * d + hc * t + 4 * hc * qc + 3 * t)


@torch.no_grad()
def frame_attention_received(q: Tensor, k: Tensor, scaling: float, *, query_chunk: int, head_chunk: int) -> Tensor:
    """Attention received by each key under a global softmax, averaged over heads and queries.

    Parameters
    ----------
    q, k: ``[H, T, d]`` queries and keys (any floating dtype, any device).
    scaling: the softmax scale (``d**-0.5`` for the audio encoder).
    query_chunk: queries per block (>= 1).
    head_chunk: heads per group (>= 1).

    Returns
    -------
    ``[T]`` float32 on ``q``'s device: ``sum_{h,i} softmax(q[h,i] . k[h]^T * scaling)[j] / (H*T)``.

    Each ``[head_chunk, query_chunk, T]`` block holds complete rows (all keys), so the row's global
    log-sum-exp and the ``exp(s - lse)`` column sums are taken from the same block, computed in
    place in float32 and accumulated in float32. Peak extra memory: see
    :func:`attention_received_peak_bytes`. No host synchronisation.
    """
    if q.dim() != 3 or k.dim() != 3 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [H, T, d] with equal shapes, got {tuple(q.shape)} and {tuple(k.shape)}")
    if query_chunk < 1 or head_chunk < 1:
        raise ValueError(f"query_chunk and head_chunk must be >= 1, got {query_chunk} and {head_chunk}")
    num_heads, num_frames, _ = q.shape
    received = torch.zeros(num_frames, dtype=torch.float32, device=q.device)
    if num_frames == 0 or num_heads == 0:
        return received
    for h0 in range(0, num_heads, head_chunk):
        h1 = min(h0 + head_chunk, num_heads)
        # One contiguous float32 copy each: pre-scaled queries, keys (transposed as a view).
        q_group = torch.empty(q[h0:h1].shape, dtype=torch.float32, device=q.device).copy_(q[h0:h1]).mul_(scaling)
        k_group_t = torch.empty(k[h0:h1].shape, dtype=torch.float32, device=k.device).copy_(k[h0:h1]).transpose(1, 2)
        for i0 in range(0, num_frames, query_chunk):
            i1 = min(i0 + query_chunk, num_frames)
            scores = torch.matmul(q_group[:, i0:i1], k_group_t)  # [hc, qc, T] float32, full rows
            # Pass 1 (per query, over all keys): max and sum of exp -> lse = max + log(sum).
            row_max = scores.amax(dim=-1, keepdim=True)
            scores.sub_(row_max).exp_()
            inv_sum = scores.sum(dim=-1, keepdim=True).reciprocal_()  # [hc, qc, 1] = exp(max - lse)
            # Pass 2: column sums of exp(s - lse) = sum_i inv_sum[i] * exp(s[i] - max[i]).
            columns = torch.matmul(inv_sum.transpose(1, 2), scores)  # [hc, 1, T]
            received.add_(columns.sum(dim=(0, 1)))
            del scores, row_max, inv_sum, columns
        del q_group, k_group_t
    return received.div_(num_heads * num_frames)


@torch.no_grad()
def windowed_attention_received(q: Tensor, k: Tensor, scaling: float, cu_seqlens: Tensor | Sequence[int], *,
                                device_budget_bytes: int | None = None) -> Tensor:
    """Attention received by each key under a softmax **within its window**, averaged over heads and queries.

    Parameters
    ----------
    q, k: ``[H, T, d]`` queries and keys (any floating dtype, any device).
    scaling: the softmax scale.
    cu_seqlens: ``[W + 1]`` window boundaries (0, ..., T), ascending, as the encoder's attention uses.
    device_budget_bytes: float32 score block budget (default: 16 MiB on the CPU, 64 MiB elsewhere).

    Returns
    -------
    ``[T]`` float32 on ``q``'s device:
    ``sum_{h, i in win(j)} softmax_{keys in win(j)}(q[h,i] . k[h]^T * scaling)[j] / (H*T)``.

    Windows are padded to the longest one and processed in groups whose ``[H, n, Wmax, Wmax]``
    float32 scores fit the budget: memory and time are linear in T. No host synchronisation beyond
    reading ``cu_seqlens`` (small) once.
    """
    if q.dim() != 3 or k.dim() != 3 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [H, T, d] with equal shapes, got {tuple(q.shape)} and {tuple(k.shape)}")
    num_heads, num_frames, _ = q.shape
    bounds = [int(x) for x in (cu_seqlens.tolist() if isinstance(cu_seqlens, Tensor) else cu_seqlens)]
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != num_frames or any(b > a for a, b in zip(bounds[1:], bounds)):
        raise ValueError(f"cu_seqlens must ascend from 0 to T = {num_frames}, got {bounds[:4]}...{bounds[-2:]}")
    received = torch.zeros(num_frames, dtype=torch.float32, device=q.device)
    if num_frames == 0 or num_heads == 0:
        return received
    starts = torch.tensor(bounds[:-1], dtype=torch.long)
    lengths = torch.tensor(bounds[1:], dtype=torch.long) - starts
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    width = int(lengths.max())
    offsets = torch.arange(width)
    valid_all = offsets.unsqueeze(0) < lengths.unsqueeze(1)  # [W, width]
    index_all = (starts.unsqueeze(1) + offsets).clamp_max(num_frames - 1)  # [W, width]
    if device_budget_bytes is None:
        device_budget_bytes = CPU_SCORE_BUDGET_BYTES if q.device.type == "cpu" else GPU_SCORE_BUDGET_BYTES
    per_window = _F32 * num_heads * width * width
    step = max(1, device_budget_bytes // per_window)
    for w0 in range(0, len(starts), step):
        index = index_all[w0 : w0 + step].to(q.device)
        valid = valid_all[w0 : w0 + step].to(q.device)
        q_win = q[:, index].to(torch.float32).mul_(scaling)  # [H, n, width, d]
        k_win = k[:, index].to(torch.float32)
        scores = torch.matmul(q_win, k_win.transpose(-1, -2))  # [H, n, width(q), width(k)]
        scores.masked_fill_(~valid[None, :, None, :], float("-inf"))
        scores = torch.softmax(scores, dim=-1)
        scores.mul_(valid[None, :, :, None])  # padded queries receive and give nothing
        columns = scores.sum(dim=(0, 2))  # [n, width]
        received.index_add_(0, index.reshape(-1), columns.mul_(valid).reshape(-1))
        del q_win, k_win, scores, columns
    return received.div_(num_heads * num_frames)


def pair_frames_to_tokens(frame_scores: Tensor, frame_lengths: Sequence[int] | Tensor | None = None) -> Tensor:
    """Pool per-frame scores to one score per LLM audio token, per audio, like ``AvgPool1d(2, 2)``.

    ``frame_lengths`` are the post-CNN frame counts of the audios in the order they were
    concatenated (None: one audio of all frames). For each audio the last frame is dropped when its
    length is odd, then consecutive pairs are averaged: ``L // 2`` scores per audio, the number of
    ``<|AUDIO|>`` tokens the processor writes for it. Returns ``[sum(L // 2)]`` float32.
    """
    frames = frame_scores.reshape(-1).to(torch.float32)
    total = frames.shape[0]
    if frame_lengths is None:
        lengths = [total]
    elif isinstance(frame_lengths, Tensor):
        lengths = [int(x) for x in frame_lengths.reshape(-1).tolist()]
    else:
        lengths = [int(x) for x in frame_lengths]
    if any(n < 0 for n in lengths) or sum(lengths) != total:
        raise ValueError(f"frame_lengths {lengths} do not add up to the {total} recorded frames")
    pieces = []
    start = 0
    for n in lengths:
        even = n - n % 2
        pieces.append(frames[start:start + even].view(-1, 2).mean(dim=-1))
        start += n
    if len(pieces) == 1:
        return pieces[0]
    return torch.cat(pieces) if pieces else frames.new_zeros(0)


class AudioSaliencyRecorder:
    """Context manager: while active, records the last audio-encoder layer's attention-received scores.

    >>> with AudioSaliencyRecorder(thinker.model.audio_tower) as recorder:
    ...     audio = thinker.model.get_audio_features(input_features, feature_attention_mask)
    >>> lengths = audio_tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))[0]
    >>> scores = recorder.token_scores(lengths.tolist())   # [N_a], one per <|AUDIO|> token

    A removable forward pre-hook on ``audio_tower.layers[-1].self_attn`` (``with_kwargs=True``)
    recomputes q/k from the hidden states the module receives and returns ``None``: the model's
    inputs and outputs are untouched. The hook is removed on exit, also when an exception is raised
    inside the ``with`` block. When the audio encoder runs several times while active, the most
    recent call is kept (:attr:`calls` counts them).

    Parameters
    ----------
    audio_tower: the audio encoder (the adapter passes the thinker's ``audio_tower``).
    query_chunk: queries per block of :func:`frame_attention_received`.
    head_chunk: heads per group; None picks :func:`default_head_chunk` for each call (a float32 score
        block of at most 16 MiB on the CPU, 64 MiB on a GPU; at least one head).
    global_max_frames: calls with more post-CNN frames than this use
        :func:`windowed_attention_received` over the call's ``cu_seqlens`` (linear cost); None keeps
        the global softmax at every length. Default :data:`GLOBAL_SALIENCY_MAX_FRAMES` (300 s).
        :attr:`windowed` says which the last call used.
    """

    def __init__(self, audio_tower: torch.nn.Module, *, query_chunk: int = DEFAULT_QUERY_CHUNK,
                 head_chunk: int | None = None,
                 global_max_frames: int | None = GLOBAL_SALIENCY_MAX_FRAMES) -> None:
        if query_chunk < 1:
            raise ValueError(f"query_chunk must be >= 1, got {query_chunk}")
        if head_chunk is not None and head_chunk < 1:
            raise ValueError(f"head_chunk must be >= 1 or None, got {head_chunk}")
        if global_max_frames is not None and global_max_frames < 0:
            raise ValueError(f"global_max_frames must be >= 0 or None, got {global_max_frames}")
        layers = getattr(audio_tower, "layers", None)
        if not layers or not hasattr(layers[-1], "self_attn"):
            raise TypeError("audio_tower must be an audio encoder with .layers[-1].self_attn")
        self.attention: torch.nn.Module = layers[-1].self_attn
        for name in ("q_proj", "k_proj", "num_heads", "scaling"):
            if not hasattr(self.attention, name):
                raise TypeError(f"the last audio layer's self_attn has no {name!r}: unsupported audio encoder")
        self.query_chunk = query_chunk
        self.head_chunk = head_chunk
        self.global_max_frames = global_max_frames
        self.windowed = False
        self.calls = 0
        self._frame_scores: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> AudioSaliencyRecorder:
        if self._handle is not None:
            raise RuntimeError("AudioSaliencyRecorder is already active")
        self.calls = 0
        self._frame_scores = None
        self._handle = self.attention.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()

    @property
    def active(self) -> bool:
        """Whether the hook is registered."""
        return self._handle is not None

    # ------------------------------------------------------------------ the hook
    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs.get("hidden_states")
        if hidden is None:
            if not args:
                raise RuntimeError("audio saliency hook: the attention module got no hidden_states")
            hidden = args[0]
        if hidden.dim() == 3 and hidden.shape[0] == 1:
            hidden = hidden[0]
        if hidden.dim() != 2:
            raise RuntimeError(f"audio saliency hook: expected hidden_states [T, D], got {tuple(hidden.shape)}")
        with torch.no_grad():
            num_frames = hidden.shape[0]
            num_heads = int(module.num_heads)
            q = module.q_proj(hidden).reshape(num_frames, num_heads, -1).transpose(0, 1)
            k = module.k_proj(hidden).reshape(num_frames, num_heads, -1).transpose(0, 1)
            self.windowed = self.global_max_frames is not None and num_frames > self.global_max_frames
            if self.windowed:
                cu_seqlens = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
                if cu_seqlens is None:
                    cu_seqlens = list(range(0, num_frames, FALLBACK_WINDOW_FRAMES)) + [num_frames]
                self._frame_scores = windowed_attention_received(q, k, float(module.scaling), cu_seqlens)
            else:
                head_chunk = self.head_chunk or default_head_chunk(
                    num_heads, num_frames, self.query_chunk, device=hidden.device
                )
                self._frame_scores = frame_attention_received(
                    q, k, float(module.scaling), query_chunk=self.query_chunk, head_chunk=head_chunk
                )
        self.calls += 1
        return None

    # ------------------------------------------------------------------ results
    @property
    def frame_scores(self) -> Tensor:
        """``[T]`` float32 per post-CNN frame (global or windowed softmax, see :attr:`windowed`)."""
        if self._frame_scores is None:
            raise RuntimeError("no audio-encoder forward was recorded: run the audio encoder inside the `with` block")
        return self._frame_scores

    def token_scores(self, frame_lengths: list[int] | None = None) -> Tensor:
        """``[N_a]`` float32, score ``i`` for the ``i``-th ``<|AUDIO|>`` token of ``input_ids``.

        ``frame_lengths``: post-CNN frame counts per audio, in order (``_get_feat_extract_output_lengths(
        feature_attention_mask.sum(-1))[0]``); None for a single audio. Pairs per audio (see
        :func:`pair_frames_to_tokens`).
        """
        return pair_frames_to_tokens(self.frame_scores, frame_lengths)
