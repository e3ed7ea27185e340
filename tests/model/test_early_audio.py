"""The audio track encoded while the video decodes (``generation/early_audio.py``), tiny models, CPU.

Exactness: a session opened from a file with the early audio work gives bitwise the same prefix
(embeddings, positions, deepstack rows, saliency, keep plan) and the same answer as one opened
without it, for Qwen2.5-Omni and Qwen3-Omni, compressed and not, on files where the audio is
aligned, padded, shorter than the video or cut; and when the early audio does not match the final
one, it is not used and nothing changes. The loader's prediction of the final audio is checked on
its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omnizip_cli.generation import GenerationOptions, Session
from omnizip_cli.generation.early_audio import EarlyAudio, ReplayingFeatureExtractor, _FeatureCall
from omnizip_cli.media import MediaOptions, load_media
from tests.helpers.media_factory import AudioTrack, VideoSpec, has_encoder, write_media

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
MEDIA = MediaOptions(fps=2, max_frames=8, min_pixels=64 * 28 * 28, max_pixels=96 * 28 * 28)
GREEDY = GenerationOptions(max_new_tokens=6)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, MediaOptions]]:
    """Files whose audio is aligned as is, padded (starts late), shorter than the video, or cut."""
    out = {"talking": (TALKING, MEDIA), "cut": (TALKING, MediaOptions(**{**MEDIA.to_dict(), "max_audio_seconds": 1.5}))}
    if has_encoder("libx264") and has_encoder("aac"):
        folder = tmp_path_factory.mktemp("early")
        video = VideoSpec(width=160, height=96, fps=10, seconds=5.0)
        out["starts_late"] = (write_media(folder / "late.mp4", video, [AudioTrack(seconds=4.0, start_s=0.6)]), MEDIA)
        out["shorter"] = (write_media(folder / "short.mp4", video, [AudioTrack(seconds=2.4)]), MEDIA)
    return out


def _assert_same_prefix(a: Session, b: Session) -> None:
    assert torch.equal(a.encoded.embeds, b.encoded.embeds)
    assert torch.equal(a.encoded.position_ids, b.encoded.position_ids)
    assert (a.encoded.audio_scores is None) == (b.encoded.audio_scores is None)
    if a.encoded.audio_scores is not None:
        assert torch.equal(a.encoded.audio_scores, b.encoded.audio_scores)
    assert torch.equal(a.prefill.embeds, b.prefill.embeds)
    assert torch.equal(a.prefill.position_ids, b.prefill.position_ids)
    assert a.prefill.lm_kwargs.keys() == b.prefill.lm_kwargs.keys()
    for rows_a, rows_b in zip(a.prefill.lm_kwargs.get("deepstack_visual_embeds") or [],
                              b.prefill.lm_kwargs.get("deepstack_visual_embeds") or [], strict=True):
        assert torch.equal(rows_a, rows_b)
    assert (a.plan is None) == (b.plan is None)
    if a.plan is not None:
        assert torch.equal(a.plan.keep, b.plan.keep)


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
@pytest.mark.parametrize("compression", [None, "45"])
def test_early_audio_session_equals_the_usual_one(tiny_model, tiny_qwen3, clips, family, compression) -> None:
    loaded = tiny_model if family == "qwen2.5" else tiny_qwen3
    names = ("talking", "starts_late", "shorter", "cut") if compression == "45" else ("talking", "shorter")
    for name in names:
        if name not in clips:
            continue
        path, options = clips[name]
        early = EarlyAudio(record_saliency=compression is not None)
        early.attach(loaded)
        with early:
            overlapped = Session.open(loaded, path, media=options, compression=compression, early_audio=early)
        assert early.outcome == "used", (name, early.outcome)
        assert overlapped.timer.stages["audio_encoder"].overlapped
        usual = Session.open(loaded, path, media=options, compression=compression, overlap=False)
        assert not usual.timer.stages["audio_encoder"].overlapped
        _assert_same_prefix(overlapped, usual)
        assert overlapped.answer("What is said?", GREEDY).token_ids == usual.answer("What is said?", GREEDY).token_ids


def test_mismatched_early_audio_is_not_used(tiny_model) -> None:
    media = load_media(TALKING, MEDIA)
    early = EarlyAudio(record_saliency=True)
    early.attach(tiny_model)
    early.submit(media.audio[: len(media.audio) // 2].copy())  # not the audio the prompt holds
    with early:
        session = Session.open(tiny_model, media, compression="45", early_audio=early)
    assert early.outcome == "not used: the final audio differs from the early one"
    assert not session.timer.stages["audio_encoder"].overlapped
    _assert_same_prefix(session, Session.open(tiny_model, media, compression="45"))


def test_early_audio_without_saliency_is_not_used_for_compression(tiny_model) -> None:
    media = load_media(TALKING, MEDIA)
    early = EarlyAudio(record_saliency=False)
    early.attach(tiny_model)
    early.submit(media.audio)
    with early:
        session = Session.open(tiny_model, media, compression="45", early_audio=early)
    assert early.outcome == "not used: saliency was not recorded"
    _assert_same_prefix(session, Session.open(tiny_model, media, compression="45"))


def test_failed_early_work_falls_back(tiny_model) -> None:
    early = EarlyAudio(record_saliency=True)
    early.attach(tiny_model)
    early.submit(np.zeros((2, 3), dtype=np.float32))  # not mono audio: the early work raises
    media = load_media(TALKING, MEDIA)
    with early:
        session = Session.open(tiny_model, media, compression="45", early_audio=early)
    assert early.outcome.startswith("failed (")
    _assert_same_prefix(session, Session.open(tiny_model, media, compression="45"))


def test_on_audio_predicts_the_returned_audio(clips) -> None:
    for name, (path, options) in clips.items():
        seen: list[np.ndarray] = []
        media = load_media(path, options, on_audio=seen.append)
        assert len(seen) == 1, name
        assert seen[0].dtype == media.audio.dtype and np.array_equal(seen[0], media.audio), name
        if name == "starts_late":
            assert media.summary.audio_offset_s > 0.3  # silence put before it (0.6 s less the AAC priming)
        if name == "cut":
            assert media.summary.audio_truncated


def test_on_audio_is_not_called_without_both_tracks(tmp_path: Path) -> None:
    if not (has_encoder("libx264") and has_encoder("aac")):
        pytest.skip("needs the libx264 and aac encoders")
    silent = write_media(tmp_path / "silent.mp4", VideoSpec(seconds=2.0))
    sound = write_media(tmp_path / "sound.m4a", None, [AudioTrack(seconds=1.0)])
    for path in (silent, sound):
        seen: list[np.ndarray] = []
        load_media(path, MEDIA, on_audio=seen.append)
        assert seen == [], path
    load_media(TALKING, MEDIA, on_audio=lambda audio: 1 / 0)  # a failing consumer does not break decoding


class _Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.sampling_rate = 16000

    def __call__(self, raw_speech: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        return {"input_features": torch.zeros(1), "attention_mask": torch.ones(1)}


def test_replaying_feature_extractor_replays_only_an_identical_call() -> None:
    audio = np.arange(8, dtype=np.float32)
    inner = _Counting()
    replay = ReplayingFeatureExtractor(inner, _FeatureCall([audio], {"padding": "max_length"}, {"input_features": 1}))
    assert replay.sampling_rate == 16000  # attributes of the real extractor
    first = replay([audio.copy()], padding="max_length")
    first.pop("input_features")  # the processor renames keys in place: each replay is a fresh dict
    assert replay([audio], padding="max_length") == {"input_features": 1}
    assert replay.replayed == 2 and inner.calls == 0
    replay([audio + 1], padding="max_length")
    replay([audio], padding="longest")
    replay([audio.astype(np.float64)], padding="max_length")
    assert replay.replayed == 2 and inner.calls == 3
