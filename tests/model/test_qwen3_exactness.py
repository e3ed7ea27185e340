"""Qwen3-Omni through omnizip, on the tiny random Qwen3-Omni in float32 on the CPU (issue 17).

* Compression off: greedy tokens and prefill logits equal stock
  ``thinker.generate(**inputs, use_audio_in_video=True)``, below the Session (bitwise logits) and
  through it (several questions from one prefilled prefix, a conversation), for video+audio,
  video only, audio only, audio shorter and longer than the video; eager and static-cache decoders.
* Compression on: tokens and prefill logits equal the stock language model run by hand on the pruned
  sequence (no KV cache), with the **deepstack features pruned by the same mask**, computed here
  from the stock vision encoder (not from the adapter's extras).
* Deepstack matters: no deepstack, or the right number of wrong rows, changes the logits.
* Float positions kept (fractional at 3 fps), windowed saliency (every window sums to its length).
* Loading: a folder with the real checkpoint layout (sharded safetensors with ``thinker.*``,
  ``talker.*``, ``code2wav.*`` keys) loads only the thinker's weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from omnizip_cli.compression import OmniZipConfig
from omnizip_cli.generation import GenerationOptions, Session
from omnizip_cli.generation.eager import forward_tokens, new_cache
from omnizip_cli.generation.stream import generate
from omnizip_cli.measure import StageTimer
from tests.helpers.model_paths import full_prompt, session_sequence, stock_generate
from tests.helpers.synthetic import synthetic_media

NEW_TOKENS = 8
GREEDY = GenerationOptions(max_new_tokens=NEW_TOKENS)
QUESTIONS = ("What is said?", "Describe it.")
MEDIA = {  # (video seconds, audio seconds)
    "av": (6.0, 6.0),
    "video": (6.0, None),
    "audio": (None, 5.0),
    "audio_shorter": (6.0, 3.0),
    "audio_longer": (4.0, 9.0),
}


@pytest.fixture
def qwen3(tiny_qwen3):
    """The shared tiny Qwen3-Omni (``tests/conftest.py``), by this file's short name."""
    return tiny_qwen3


@pytest.fixture(scope="module")
def media():
    return {name: synthetic_media(v, a, seed=i) for i, (name, (v, a)) in enumerate(MEDIA.items())}


def _stops(session: Session) -> set[int]:
    return {int(i) for i in session.text.generation_config.eos_token_id}


def stock_deepstack(loaded, session: Session) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
    """Video slots ``[1, L']`` and deepstack rows of the kept video tokens, from the stock vision encoder."""
    tensors = session.prepared.tensors
    if tensors.get("pixel_values_videos") is None:
        return None, None
    ids = session.encoded.input_ids
    video_slots = ids == loaded.model.config.video_token_id  # [1, L]
    keep = session.plan.keep if session.plan is not None else torch.ones(ids.shape[1], dtype=torch.bool)
    with torch.no_grad():
        out = loaded.model.model.get_video_features(tensors["pixel_values_videos"], tensors["video_grid_thw"])
    rows = [torch.cat(tuple(layer))[keep[video_slots[0]]] for layer in out.deepstack_features]
    return video_slots[:, keep], rows


def manual_greedy_deepstack(text, embeds, positions, video_slots, deepstack, new_tokens, stops):
    """The stock language model by hand, whole sequence each step (no cache), deepstack at the video slots."""
    tokens: list[int] = []
    first = None
    with torch.no_grad():
        for _ in range(new_tokens):
            extra = {}
            if video_slots is not None:
                mask = torch.zeros((1, embeds.shape[1]), dtype=torch.bool)
                mask[:, : video_slots.shape[1]] = video_slots
                extra = {"visual_pos_masks": mask, "deepstack_visual_embeds": deepstack}
            hidden = text.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False,
                                         **extra).last_hidden_state
            logits = text.lm_head(hidden)[0, -1]
            first = logits if first is None else first
            token = int(torch.argmax(logits))
            tokens.append(token)
            if token in stops:
                break
            embeds = torch.cat([embeds, text.embed_tokens(torch.tensor([[token]]))], dim=1)
            positions = torch.cat([positions, positions[:, :, -1:] + 1], dim=2)
    return tokens, first


# ------------------------------------------------------------------------------------ family


def test_tiny_qwen3_resolves_and_loads_only_the_thinker(qwen3) -> None:
    from omnizip_cli.models.registry import adapter_for_model_type, adapter_for_tiny_name

    assert adapter_for_tiny_name("tiny-qwen3") is qwen3.adapter
    assert adapter_for_model_type("qwen3_omni_moe") is qwen3.adapter
    assert qwen3.describe()["family"] == "Qwen3-Omni"
    assert type(qwen3.model).__name__ == "Qwen3OmniMoeThinkerForConditionalGeneration"
    config = json.loads((Path(qwen3.path) / "config.json").read_text())
    assert config["model_type"] == "qwen3_omni_moe"
    geometry = qwen3.adapter.vision_geometry(qwen3.model)
    assert (geometry.patch_size, geometry.token_pixels) == (16, 32)


# ------------------------------------------------------------------------------------ off


def test_uncompressed_prefill_equals_stock_generate_bitwise(qwen3, media) -> None:
    prompt = full_prompt(qwen3, media["av"], QUESTIONS[0])
    stock_tokens, stock_logits = stock_generate(qwen3, prompt, NEW_TOKENS)
    encoded = qwen3.adapter.encode(qwen3.model, prompt, record_saliency=False, timer=StageTimer())
    assert encoded.position_ids.dtype.is_floating_point
    prefill = qwen3.adapter.prefill_inputs(encoded, None)
    assert set(prefill.lm_kwargs) == {"visual_pos_masks", "deepstack_visual_embeds"}
    ours = generate(qwen3.adapter.text_model(qwen3.model), prefill, GREEDY, prompt_ids=encoded.input_ids,
                    head_on_all_positions=True)
    assert ours.token_ids == stock_tokens
    assert torch.equal(ours.prefill_logits, stock_logits)


@pytest.mark.parametrize("decoder", ["eager", "fast"])
def test_session_questions_and_conversation_equal_stock_generate(qwen3, media, decoder) -> None:
    clip = media["av"]
    session = Session.open(qwen3, clip, compression=None, decoder=decoder)
    for question in QUESTIONS:
        prompt = full_prompt(qwen3, clip, question)
        assert session.encoded.input_ids[0].tolist() + session.question_ids(question) == prompt.input_ids[0].tolist()
        stock_tokens, stock_logits = stock_generate(qwen3, prompt, NEW_TOKENS)
        stats = session.answer(question, GREEDY)
        assert stats.token_ids == stock_tokens, question
        torch.testing.assert_close(stats.prefill_logits, stock_logits, rtol=0, atol=1e-4)
    assert stats.prefix_source == "memory"
    chat = session.conversation()
    chat.answer(QUESTIONS[0], GenerationOptions(max_new_tokens=3))
    conversation = torch.tensor([chat.ids() + chat.question_ids("And then?")])
    stock_tokens, _ = stock_generate(qwen3, full_prompt(qwen3, clip, QUESTIONS[0]), NEW_TOKENS, input_ids=conversation)
    assert chat.answer("And then?", GREEDY).token_ids == stock_tokens


@pytest.mark.parametrize("name", ["video", "audio", "audio_shorter", "audio_longer"])
def test_every_input_kind_uncompressed_equals_stock_generate(qwen3, media, name) -> None:
    clip = media[name]
    session = Session.open(qwen3, clip, compression=None)
    stock_tokens, stock_logits = stock_generate(qwen3, full_prompt(qwen3, clip, QUESTIONS[0]), NEW_TOKENS)
    stats = session.answer(QUESTIONS[0], GREEDY)
    assert stats.token_ids == stock_tokens
    torch.testing.assert_close(stats.prefill_logits, stock_logits, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------ compressed


@pytest.mark.parametrize(
    ("name", "preset", "decoder"),
    [("av", "45", "eager"), ("av", "35", "fast"), ("video", "45", "eager"), ("audio", "45", "eager"),
     ("audio_shorter", "35", "eager"), ("audio_longer", "45", "eager")],
)
def test_compressed_session_equals_stock_model_on_the_pruned_sequence(qwen3, media, name, preset, decoder) -> None:
    session = Session.open(qwen3, media[name], compression=preset, decoder=decoder)
    plan = session.plan
    assert session.prefill.length == int(plan.keep.sum()) < session.prefix_length
    assert torch.equal(session.prefill.position_ids, session.encoded.position_ids[:, :, plan.keep])
    assert session.prefill.position_ids.dtype.is_floating_point
    video_slots, deepstack = stock_deepstack(qwen3, session)
    if video_slots is not None:
        assert torch.equal(session.prefill.lm_kwargs["visual_pos_masks"], video_slots)
        assert 0 < int(video_slots.sum()) < int((session.encoded.input_ids == qwen3.model.config.video_token_id).sum())
    stats = session.answer(QUESTIONS[0], GREEDY)
    embeds, positions = session_sequence(session, session.question_ids(QUESTIONS[0]))
    tokens, logits = manual_greedy_deepstack(session.text, embeds, positions, video_slots, deepstack, NEW_TOKENS,
                                             _stops(session))
    assert stats.token_ids == tokens
    torch.testing.assert_close(stats.prefill_logits, logits, rtol=0, atol=1e-4)
    counts = session.tokens
    assert counts.text.after == counts.text.before
    if media[name].frames is not None:
        assert 0 < counts.video.after < counts.video.before
    if media[name].audio is not None:
        assert 0 < counts.audio.after < counts.audio.before


def test_wrong_or_missing_deepstack_rows_change_the_logits(qwen3, media) -> None:
    """Dropping the deepstack, or giving the right number of rows from the wrong tokens, changes the logits."""
    session = Session.open(qwen3, media["av"], compression="45")
    prefill = session.prefill
    rows = prefill.lm_kwargs["deepstack_visual_embeds"]
    kept = rows[0].shape[0]
    full = session.encoded.extras["deepstack"]
    variants = {
        "right": prefill.lm_kwargs,
        "none": {},
        "truncated": {**prefill.lm_kwargs, "deepstack_visual_embeds": [layer[:kept] for layer in full]},
    }
    logits = {}
    for name, kwargs in variants.items():
        with torch.no_grad():
            logits[name] = forward_tokens(session.text, prefill.embeds, prefill.attention_mask,
                                          prefill.position_ids, new_cache(session.text), lm_kwargs=kwargs)
    assert float((logits["right"] - logits["none"]).abs().max()) > 1e-2
    assert float((logits["right"] - logits["truncated"]).abs().max()) > 1e-3


# ------------------------------------------------------------------------------------ layout, saliency


def test_positions_are_float_and_fractional_at_three_fps(qwen3) -> None:
    clip = synthetic_media(4.0, 4.0, fps=3.0, seed=7)
    session = Session.open(qwen3, clip, compression="45")
    positions = session.encoded.position_ids
    assert positions.dtype == torch.float32
    assert bool((positions != positions.round()).any())  # t_g = 8.667 g
    assert torch.equal(session.prefill.position_ids, positions[:, :, session.plan.keep])  # never cast or renumbered
    assert len(session.answer(QUESTIONS[0], GenerationOptions(max_new_tokens=3)).token_ids) >= 1


def test_saliency_is_windowed_one_score_per_audio_token(qwen3, media) -> None:
    session = Session.open(qwen3, media["audio_longer"], compression="45")  # 9 s: windows of 104 + 13
    scores = session.encoded.audio_scores
    audio_tokens = int((session.encoded.input_ids == qwen3.model.config.audio_token_id).sum())
    assert scores.dtype == torch.float32 and scores.numel() == audio_tokens == 13 * 9
    torch.testing.assert_close(scores[:104].sum(), torch.tensor(104.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(scores[104:].sum(), torch.tensor(13.0), rtol=1e-5, atol=0)


def test_fast_encoder_attention_reference_backend_gives_the_same_encoding(qwen3, media) -> None:
    from omnizip_cli.models.encoder_attention import fast_encoder_attention

    prompt = full_prompt(qwen3, media["audio_longer"], QUESTIONS[0])
    stock = qwen3.adapter.encode(qwen3.model, prompt, record_saliency=True, timer=StageTimer())
    with fast_encoder_attention(qwen3.adapter.encoder_modules(qwen3.model), force=True, backend="reference") as on:
        assert on
        fast = qwen3.adapter.encode(qwen3.model, prompt, record_saliency=True, timer=StageTimer())
    torch.testing.assert_close(fast.embeds, stock.embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.audio_scores, stock.audio_scores, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast.extras["deepstack"], stock.extras["deepstack"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ loading


def test_real_layout_folder_loads_only_the_thinker_weights(qwen3, tmp_path: Path) -> None:
    """Sharded safetensors with thinker.*, talker.* and code2wav.* keys: only the thinker is read."""
    from safetensors.torch import load_file, save_file

    from omnizip_cli import load_model

    source = Path(qwen3.path)
    folder = tmp_path / "Qwen3-Omni-like"
    folder.mkdir()
    for file in source.iterdir():
        if file.name not in ("model.safetensors", "OMNIZIP_MANIFEST.json", "OMNIZIP_TINY_MODEL"):
            shutil.copy(file, folder / file.name)
    weights = load_file(source / "model.safetensors")
    assert weights and all(key.startswith("thinker.") for key in weights)
    keys = sorted(weights)
    generator = torch.Generator().manual_seed(1)
    shards = {
        "model-00001-of-00002.safetensors": {k: weights[k] for k in keys[: len(keys) // 2]}
        | {"talker.model.layers.0.mlp.up_proj.weight": torch.randn(8, 4, generator=generator),
           "talker.codec_head.weight": torch.randn(16, 8, generator=generator)},
        "model-00002-of-00002.safetensors": {k: weights[k] for k in keys[len(keys) // 2 :]}
        | {"code2wav.decoder.0.conv.weight": torch.randn(4, 4, 3, generator=generator)},
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
    total = sum(t.numel() * t.element_size() for s in shards.values() for t in s.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    loaded = load_model(str(folder))
    assert not loaded.is_tiny and loaded.adapter is qwen3.adapter
    assert type(loaded.model).__name__ == "Qwen3OmniMoeThinkerForConditionalGeneration"
    assert not any("talker" in k or "code2wav" in k for k in loaded.model.state_dict())
    theirs = loaded.model.state_dict()
    for key, value in qwen3.model.state_dict().items():
        assert torch.equal(theirs[key], value), key


# ------------------------------------------------------------------------------------ time groups


def test_time_groups_pair_two_grid_steps_and_quirks_restore_one_step_runs(qwen3, media) -> None:
    """2 fps: paired groups of 2 frames + 26 audio tokens; reference_quirks: the authors' 1 frame + 13."""
    tpf = 6 * 8  # 192 x 256 frames: 6 x 8 tokens per grid step
    paired = Session.open(qwen3, media["av"], compression=OmniZipConfig())
    assert [(r["video_tokens"], r["audio_tokens"], r["guided"]) for r in paired.group_rows] == [(2 * tpf, 26, True)] * 3
    authors = paired.with_compression(OmniZipConfig(reference_quirks=True))
    assert [(r["video_tokens"], r["audio_tokens"], r["guided"]) for r in authors.group_rows] == [(tpf, 13, True)] * 6
    # audio past the video's end: audio-only groups, not folded into the last guided group
    longer = Session.open(qwen3, media["audio_longer"], compression=OmniZipConfig())
    assert [(r["video_tokens"], r["audio_tokens"], r["guided"]) for r in longer.group_rows] == [
        (2 * tpf, 26, True), (2 * tpf, 26, True), (0, 26, False), (0, 26, False), (0, 13, False)]
    # video past the audio's end: an unguided group at rho_video
    shorter = Session.open(qwen3, media["audio_shorter"], compression=OmniZipConfig())
    rows = shorter.group_rows
    assert [(r["video_tokens"], r["audio_tokens"], r["guided"]) for r in rows] == [
        (2 * tpf, 26, True), (2 * tpf, 13, True), (2 * tpf, 0, False)]
    assert rows[2]["video_drop_ratio"] == pytest.approx(OmniZipConfig().rho_video)


def test_paired_groups_run_the_temporal_branch(qwen3, media) -> None:
    """The odd frame of each paired group is pruned by novelty against the even frame."""
    from omnizip_cli.compression import build_keep_plan

    session = Session.open(qwen3, media["av"], compression=OmniZipConfig())
    encoded = session.encoded
    embeds = encoded.embeds[0].clone()
    video = torch.nonzero(encoded.extras["video_mask"][0]).flatten().view(6, -1)  # [steps, tpf]
    half = video.shape[1] // 2
    embeds[video[1]] = embeds[video[0]]  # step 1 repeats step 0 ...
    embeds[video[1, half:]] = -embeds[video[0, half:]]  # ... except its second half: novel (cosine -1)
    ids = qwen3.adapter.token_ids(qwen3.model)
    kwargs = dict(audio_token_id=ids.audio, video_token_id=ids.video, spatial_merge_size=2, config=session.config)
    plan = build_keep_plan(embeds, encoded.input_ids[0], encoded.audio_scores, encoded.video_grid_thw,
                           time_groups=qwen3.adapter.time_groups(encoded, session.config), **kwargs)
    step0, step1 = plan.keep[video[0]], plan.keep[video[1]]
    kept = int(step1.sum())
    assert 0 < kept == int(step0.sum()) < video.shape[1]  # the group's ratio for both frames
    if kept <= half:
        assert not bool(step1[:half].any())  # only novel tokens kept
    else:
        assert bool(step1[half:].all())  # every novel token kept
    # the authors' one-step runs: step 1 is an even frame of its own group (DPC-KNN, not novelty)
    one_step = build_keep_plan(embeds, encoded.input_ids[0], encoded.audio_scores, encoded.video_grid_thw,
                               **{**kwargs, "config": OmniZipConfig(reference_quirks=True)})
    assert not torch.equal(one_step.keep[video[1]], step1)


def test_inconsistent_checkpoint_configs_are_named(qwen3) -> None:
    """The silent traps of spec §8 (time-id rate, missing vision_start_token_id, patch-14 processor)."""
    import copy

    from omnizip_cli.models.qwen3_omni import config_mismatch

    assert config_mismatch(qwen3.model.config, qwen3.processor) is None
    config = copy.deepcopy(qwen3.model.config)
    config.position_id_per_seconds = 25
    assert "position_id_per_seconds is 25" in config_mismatch(config, qwen3.processor)
    config = copy.deepcopy(qwen3.model.config)
    del config.vision_start_token_id
    assert "vision_start_token_id" in config_mismatch(config, qwen3.processor)
    processor = copy.deepcopy(qwen3.processor)
    processor.video_processor.patch_size = 14
    assert "14-px patches" in config_mismatch(qwen3.model.config, processor)


def test_cli_ask_on_the_shipped_sample_reports_the_family(qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    """``omnizip ask samples/talking.mp4 ... --model tiny-qwen3 --json``: runs, compresses, says Qwen3-Omni."""
    from typer.testing import CliRunner

    import omnizip_cli.generation.opening
    from omnizip_cli.cli import app

    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: qwen3)
    sample = Path(__file__).resolve().parents[2] / "samples" / "talking.mp4"
    result = CliRunner().invoke(app, ["ask", str(sample), "What is said?", "--model", "tiny-qwen3", "--device", "cpu",
                                      "--max-new-tokens", "3", "--max-frames", "4", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"]["family"] == "Qwen3-Omni"
    text = json.dumps(payload)
    assert "fast decoder off on cpu" in text  # the decoder says why it is off


# ------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_decoder_and_fast_encoders_on_the_moe_thinker(media) -> None:
    """On a GPU: the CUDA-graph decoder captures the MoE step (grouped_mm is graph-safe) and gives the
    eager loop's tokens; the fast encoder attention is on and the answer equals the stock encoders'."""
    from omnizip_cli import ModelSpec, load_model

    fast = load_model(ModelSpec(model="tiny-qwen3", device="cuda", dtype="float32", attn_implementation="sdpa"))
    for compression in (None, "45"):
        eager = Session.open(fast, media["av"], compression=compression, decoder="eager").answer(QUESTIONS[0], GREEDY)
        graph = Session.open(fast, media["av"], compression=compression, decoder="fast").answer(QUESTIONS[0], GREEDY)
        assert not any("failed" in note for note in graph.notes), graph.notes
        assert graph.decoder != "eager", graph.notes
        assert graph.token_ids == eager.token_ids
    stock = load_model(ModelSpec(model="tiny-qwen3", device="cuda", dtype="float32", attn_implementation="sdpa",
                                 fast_encoders=False))
    ours = Session.open(fast, media["av"], compression="45", decoder="eager").answer(QUESTIONS[0], GREEDY)
    theirs = Session.open(stock, media["av"], compression="45", decoder="eager").answer(QUESTIONS[0], GREEDY)
    assert ours.token_ids == theirs.token_ids


def test_a_sliding_window_text_config_is_refused_not_answered_differently(tiny_qwen3, tmp_path) -> None:
    """transformers' own Qwen3-Omni MoE test configuration sets ``sliding_window`` 50: the cache would
    keep only 50 prefix tokens for the question while stock attends to all of them. Refused, one line."""
    import copy
    import json
    import shutil

    from omnizip_cli import load_model
    from omnizip_cli.errors import ModelLoadError
    from omnizip_cli.models.qwen_omni_thinker import sliding_window_problem

    text = copy.deepcopy(tiny_qwen3.model.config.get_text_config())
    assert sliding_window_problem(text) is None
    text.sliding_window = 50
    assert "sliding_window 50" in sliding_window_problem(text)
    text.layer_types = ["full_attention", "sliding_attention"]
    assert "sliding_attention" in sliding_window_problem(text)

    from omnizip_cli.integrity import MANIFEST_NAME

    folder = tmp_path / "qwen3-sliding"
    shutil.copytree(tiny_qwen3.path, folder)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # a folder of the user's own, edited by hand
    config = json.loads((folder / "config.json").read_text())

    def set_window(node: object) -> int:
        found = 0
        if isinstance(node, dict):
            if "text_config" in node and isinstance(node["text_config"], dict):
                node["text_config"]["sliding_window"] = 50
                found += 1
            found += sum(set_window(value) for value in node.values())
        return found

    assert set_window(config) >= 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="sliding_window 50"):
        load_model(str(folder), device="cpu", dtype="float32")
