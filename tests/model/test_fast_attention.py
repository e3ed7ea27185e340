"""Fast encoder attention (issue 8): one varlen call per encoder layer, equal to the stock path.

CPU tests (tiny random thinker, float32): the vision and audio encoders give the stock outputs
(relative error < 1e-5) when their attention runs through our registered function with the CPU
reference (padded batch + one SDPA call per layer); the switch is removable; the language model is
untouched; the audio saliency pre-hook still sees what it saw before.

GPU tests (``@pytest.mark.gpu``, skipped without CUDA), encoders at the real 7B widths with fewer
layers and random weights:

* float32: ``varlen_attn`` (flash) has no float32 kernel, so in float32 the ``auto`` backend runs the
  padded-batch SDPA on the GPU; it must equal stock within 1e-5 relative.
* bfloat16: the ``varlen_attn`` kernel against the stock per-window ``sdpa`` loop. Stated bound:
  relative (Frobenius) difference below 2e-2, and the kernel's error against the float32 result at
  most 1.5x (+1e-3) the stock bfloat16 path's own error against it.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from omnizip_cli.models import encoder_attention as fa
from omnizip_cli.models.qwen2_5_omni import ADAPTER


def encoders(model):
    """The encoders by name, as the adapter lists them."""
    return ADAPTER.encoder_modules(model)

FP32_RTOL = 1e-5


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def thinker(tiny_cpu_model):
    model = tiny_cpu_model.model
    assert model.config.vision_config._attn_implementation == "sdpa"
    return model


def media(model, seconds: int = 6, grid_hw: tuple[int, int] = (16, 28), seed: int = 0):
    """Random video patches (2 fps, one grid per second) and random log-mel features for ``seconds``."""
    g = torch.Generator().manual_seed(seed)
    vision = model.config.vision_config
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    grid = torch.tensor([[seconds, *grid_hw]])
    pixels = torch.randn(int(grid.prod()), patch_dim, generator=g)
    frames = seconds * 100 + 37  # not a multiple of the 200-frame chunk: a short last chunk
    features = torch.randn(1, model.config.audio_config.num_mel_bins, frames + 50, generator=g)
    mask = torch.zeros(1, frames + 50, dtype=torch.long)
    mask[:, :frames] = 1
    return pixels, grid, features, mask


@torch.no_grad()
def encode(model, pixels, grid, features, mask):
    thinker = model.model
    video = thinker.get_video_features(pixels, grid).pooler_output[0]
    audio = thinker.get_audio_features(features, mask).last_hidden_state
    return video, audio


# ---------------------------------------------------------------------------------------------- CPU


def test_registered_in_transformers_attention_registry() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.utils.generic import is_flash_attention_requested

    name = fa.register_fast_attention()
    for registered in fa.BACKENDS.values():
        assert registered in ALL_ATTENTION_FUNCTIONS
        # the name routes the encoders to their varlen (cu_seqlens) branch
        assert is_flash_attention_requested(requested_attention_implementation=registered)
    assert ALL_ATTENTION_FUNCTIONS.get_interface(name, None) is fa.varlen_attention_forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_varlen_equals_per_segment_attention(dtype) -> None:
    torch.manual_seed(0)
    lengths = [64, 32, 0, 64, 17, 1, 100]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total, heads, dim = sum(lengths), 4, 16
    q, k, v = (torch.randn(total, heads, dim, dtype=dtype) for _ in range(3))
    out = fa.reference_varlen_attention(q, k, v, cu, max(lengths), scale=0.3)
    expected = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e > s:
            qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
            expected.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=0.3).transpose(0, 1))
    expected = torch.cat(expected)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, expected) < (FP32_RTOL if dtype == torch.float32 else 1e-2)
    # max_seqlen omitted: computed
    assert torch.equal(fa.reference_varlen_attention(q, k, v, cu, None, scale=0.3), out)


def test_encoders_equal_stock_with_one_call_per_layer(thinker, monkeypatch) -> None:
    inputs = media(thinker)
    stock_video, stock_audio = encode(thinker, *inputs)

    calls: list[tuple[int, int]] = []
    reference = fa.reference_varlen_attention

    def spy(q, k, v, cu_seqlens, max_seqlen=None, scale=None):
        calls.append((q.shape[0], cu_seqlens.numel() - 1))
        return reference(q, k, v, cu_seqlens, max_seqlen, scale)

    monkeypatch.setattr(fa, "reference_varlen_attention", spy)
    with fa.fast_encoder_attention(encoders(thinker), force=True) as enabled:
        assert enabled
        assert fa.is_fast_encoder_attention_enabled(encoders(thinker))
        fast_video, fast_audio = encode(thinker, *inputs)

    vision_layers = thinker.config.vision_config.depth
    audio_layers = thinker.config.audio_config.encoder_layers
    assert len(calls) == vision_layers + audio_layers  # one attention call per layer, all windows in it
    assert max(n for _, n in calls) > 1  # and those calls really hold several windows / chunks
    assert fast_video.shape == stock_video.shape and fast_audio.shape == stock_audio.shape
    assert rel_err(fast_video, stock_video) < FP32_RTOL
    assert rel_err(fast_audio, stock_audio) < FP32_RTOL


def test_switch_is_removable_and_nests(thinker) -> None:
    before = fa.encoder_attention_implementations(encoders(thinker))
    assert before == {"vision": "sdpa", "audio": "sdpa"}

    assert fa.enable_fast_encoder_attention(encoders(thinker), force=True)
    on = fa.encoder_attention_implementations(encoders(thinker))
    assert on["vision"] == on["audio"] == fa.FAST_ATTENTION_NAME
    assert thinker.model.language_model.config._attn_implementation == "sdpa"
    # the objects the attention modules read at call time are the ones switched
    assert thinker.model.visual.blocks[0].attn.config._attn_implementation == fa.FAST_ATTENTION_NAME
    assert thinker.model.audio_tower.layers[-1].self_attn.config._attn_implementation == fa.FAST_ATTENTION_NAME
    assert fa.enable_fast_encoder_attention(encoders(thinker), force=True)  # idempotent
    fa.disable_fast_encoder_attention(encoders(thinker))
    assert fa.encoder_attention_implementations(encoders(thinker)) == before
    fa.disable_fast_encoder_attention(encoders(thinker))  # a second disable is a no-op
    assert fa.encoder_attention_implementations(encoders(thinker)) == before

    with fa.fast_encoder_attention(encoders(thinker), force=True, backend="reference"):
        with fa.fast_encoder_attention(encoders(thinker), force=True):
            assert fa.encoder_attention_implementations(encoders(thinker))["vision"] == fa.FAST_ATTENTION_NAME
        assert fa.encoder_attention_implementations(encoders(thinker))["vision"] == fa.REFERENCE_ATTENTION_NAME
    assert fa.encoder_attention_implementations(encoders(thinker)) == before

    with pytest.raises(RuntimeError, match="boom"), fa.fast_encoder_attention(encoders(thinker), force=True):
        raise RuntimeError("boom")
    assert fa.encoder_attention_implementations(encoders(thinker)) == before
    assert not fa.is_fast_encoder_attention_enabled(encoders(thinker))

    with pytest.raises(ValueError):
        fa.enable_fast_encoder_attention(encoders(thinker), force=True, backend="nope")


def test_policy_keeps_stock_path_on_cpu(thinker) -> None:
    decision = fa.fast_attention_decision(encoders(thinker))
    assert not decision.enable and "cpu" in decision.reason
    before = fa.encoder_attention_implementations(encoders(thinker))
    assert fa.enable_fast_encoder_attention(encoders(thinker)) is False
    with fa.fast_encoder_attention(encoders(thinker)) as enabled:
        assert enabled is False
        assert fa.encoder_attention_implementations(encoders(thinker)) == before
    assert fa.encoder_attention_implementations(encoders(thinker)) == before


def test_language_model_untouched(thinker) -> None:
    from omnizip_cli.generation.eager import forward_tokens, new_cache

    torch.manual_seed(1)
    length = 40
    text = ADAPTER.text_model(thinker)
    embeds = torch.randn(1, length, thinker.config.text_config.hidden_size)
    positions = torch.arange(length).view(1, 1, -1).expand(3, 1, -1)
    mask = torch.ones(1, length, dtype=torch.long)

    def prefill():
        with torch.no_grad():
            return forward_tokens(text, embeds, mask, positions, new_cache(text))

    stock_logits = prefill()
    language_model = thinker.model.language_model
    with fa.fast_encoder_attention(encoders(thinker), force=True):
        assert language_model.config._attn_implementation == "sdpa"
        assert thinker.config.text_config._attn_implementation == "sdpa"
        assert thinker.config._attn_implementation == "sdpa"
        fast_logits = prefill()
    assert torch.equal(stock_logits, fast_logits)


def _last_layer_pre_hook(store: dict):
    """A pre-hook shaped like the saliency recorder's: keyword inputs of the last audio layer's self_attn."""

    def hook(module, args, kwargs):
        hidden, cu = kwargs["hidden_states"], kwargs["cu_seqlens"]
        heads = module.num_heads
        q = module.q_proj(hidden).view(hidden.shape[0], heads, -1).transpose(0, 1)
        k = module.k_proj(hidden).view(hidden.shape[0], heads, -1).transpose(0, 1)
        received = torch.zeros(hidden.shape[0])
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
            probs = torch.softmax(q[:, s:e] @ k[:, s:e].transpose(1, 2) * module.scaling, -1)
            received[s:e] = probs.mean(0).sum(0)
        store["hidden"], store["cu"], store["scores"] = hidden.clone(), cu.clone(), received

    return hook


def test_audio_saliency_pre_hook_still_works(thinker) -> None:
    _, _, features, mask = media(thinker, seconds=5)
    attn = thinker.model.audio_tower.layers[-1].self_attn
    stores: list[dict] = [{}, {}]
    for store, fast in zip(stores, (False, True)):
        handle = attn.register_forward_pre_hook(_last_layer_pre_hook(store), with_kwargs=True)
        try:
            with fa.fast_encoder_attention(encoders(thinker), force=fast):
                with torch.no_grad():
                    thinker.model.get_audio_features(features, mask)
        finally:
            handle.remove()
    stock, fast = stores
    assert fast, "the pre-hook did not run under the fast attention"
    assert torch.equal(stock["cu"], fast["cu"])
    assert rel_err(fast["hidden"], stock["hidden"]) < FP32_RTOL
    assert rel_err(fast["scores"], stock["scores"]) < FP32_RTOL


def test_audio_saliency_recorder_under_fast_attention(thinker) -> None:
    saliency = pytest.importorskip("omnizip_cli.models.saliency")
    _, _, features, mask = media(thinker, seconds=5)
    audio_tower = thinker.model.audio_tower
    frame_lengths = [int(x) for x in audio_tower._get_feat_extract_output_lengths(mask.sum(-1))[0].tolist()]
    scores = []
    for fast in (False, True):
        with fa.fast_encoder_attention(encoders(thinker), force=fast), torch.no_grad():
            with saliency.AudioSaliencyRecorder(audio_tower) as recorder:
                thinker.model.get_audio_features(features, mask)
            scores.append(recorder.token_scores(frame_lengths).float())
    assert scores[0].numel() > 0
    assert rel_err(scores[1], scores[0]) < FP32_RTOL


# ---------------------------------------------------------------------------------------------- GPU

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@contextlib.contextmanager
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _real_width_thinker(dtype: torch.dtype):
    """Random thinker with the real 7B encoder widths (fewer layers) and a small LLM, built on the GPU."""
    from transformers import Qwen2_5OmniThinkerConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    config = Qwen2_5OmniThinkerConfig(
        vision_config=dict(
            depth=4, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=256,
            window_size=112, fullatt_block_indexes=[1, 3], hidden_act="silu",
        ),
        audio_config=dict(
            encoder_layers=4, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120, output_dim=256,
            n_window=100, num_mel_bins=128,
        ),
        text_config=dict(
            hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=152064,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
        ),
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation="sdpa"
        )
    return model.eval()


def _cuda_inputs(model, seconds: int = 8):
    pixels, grid, features, mask = media(model, seconds=seconds)
    return pixels.cuda(), grid.cuda(), features.cuda(), mask.cuda()


@pytest.mark.gpu
@requires_cuda
def test_gpu_policy_enables_without_flash_attn() -> None:
    model = _real_width_thinker(torch.bfloat16)
    decision = fa.fast_attention_decision(encoders(model))
    if fa._flash_attn_installed():
        assert not decision.enable and "flash" in decision.reason
    else:
        assert decision.enable, decision.reason
        with fa.fast_encoder_attention(encoders(model)) as enabled:
            assert enabled
            assert model.model.language_model.config._attn_implementation == "sdpa"
        assert not fa.is_fast_encoder_attention_enabled(encoders(model))


@pytest.mark.gpu
@requires_cuda
def test_gpu_float32_equals_stock() -> None:
    """float32: varlen_attn has no float32 kernel, so ``auto`` runs the batched SDPA reference on the GPU."""
    with no_tf32():
        model = _real_width_thinker(torch.float32)
        inputs = _cuda_inputs(model)
        stock_video, stock_audio = encode(model, *inputs)
        with fa.fast_encoder_attention(encoders(model), force=True):
            fast_video, fast_audio = encode(model, *inputs)
    assert rel_err(fast_video, stock_video) < FP32_RTOL
    assert rel_err(fast_audio, stock_audio) < FP32_RTOL
    q = torch.randn(128, 16, 80, device="cuda")
    assert not fa.kernel_supports(q)  # the stated reason float32 does not use the kernel


@pytest.mark.gpu
@requires_cuda
def test_gpu_bfloat16_varlen_kernel_within_bound() -> None:
    if not fa.varlen_kernel_available():
        pytest.skip("this PyTorch has no torch.nn.attention.varlen")
    model = _real_width_thinker(torch.bfloat16)
    inputs = _cuda_inputs(model)
    stock_video, stock_audio = encode(model, *inputs)
    with fa.fast_encoder_attention(encoders(model), force=True, backend="kernel"):
        fast_video, fast_audio = encode(model, *inputs)
    # the float32 result of the same weights, stock path, as the common reference
    with no_tf32():
        ref_video, ref_audio = encode(model.float(), *inputs)
    for fast, stock, ref in ((fast_video, stock_video, ref_video), (fast_audio, stock_audio, ref_audio)):
        assert torch.isfinite(fast).all()
        assert rel_err(fast, stock) < 2e-2
        assert rel_err(fast, ref) <= 1.5 * rel_err(stock, ref) + 1e-3
