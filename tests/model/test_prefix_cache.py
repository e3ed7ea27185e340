"""The disk cache of prepared media (tiny model, float32, CPU).

* Exactness: a session reopened from the disk cache gives the same greedy tokens as the fresh one
  (and so as stock ``generate``, which tests/model/test_exactness.py checks for the fresh session),
  compressed and uncompressed, for several questions and a conversation, on real files: the sample
  and a clip whose audio ends before the video (the cache keys on the file's bytes).
* Atomicity: an entry without a valid manifest (half written, truncated) is never read, and removed.
* Eviction: least recently used first, down to the cap. Concurrent writers: one entry, intact.
* Interrupts: a question's generator closed mid-answer, or a Ctrl-C inside the question's prefill,
  leaves the session answering exactly as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from omnizip_cli.compression import CompressionSetting
from omnizip_cli.generation import GenerationOptions, OpenOptions, Session
from omnizip_cli.generation.prefix_cache import ENTRY_NAME, TENSORS_NAME, PrefixCache, make_key
from omnizip_cli.integrity import MANIFEST_NAME
from omnizip_cli.media import MediaOptions, load_media
from tests.helpers.media_factory import AudioTrack, VideoSpec, has_encoder, write_media
from tests.helpers.model_paths import full_prompt, stock_generate

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
MEDIA = MediaOptions(fps=2, max_frames=8, min_pixels=64 * 28 * 28, max_pixels=96 * 28 * 28)
GREEDY = GenerationOptions(max_new_tokens=8)
QUESTIONS = ("What is said?", "Who speaks, and where?", "Describe it.")
BIG = 10**12


@pytest.fixture(scope="module")
def late_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s video whose AAC track lasts 4.4 s (the audio ends inside the last 2-s chunk)."""
    if not (has_encoder("libx264") and has_encoder("aac")):
        pytest.skip("needs the libx264 and aac encoders")
    path = tmp_path_factory.mktemp("media") / "late.mp4"
    return write_media(path, VideoSpec(width=160, height=96, fps=10, seconds=6.0), [AudioTrack(seconds=4.4)])


def _open(loaded: Any, video: Path, cache: PrefixCache, compression: Any, **fields: Any) -> Session:
    """The library's opening path (Session.open) with this cache folder."""
    return Session.open(loaded, video, OpenOptions(media=MEDIA, compression=compression, cache=cache, **fields))


def _from_disk(session: Session) -> bool:
    return session.origin.source == "disk"


def _script(session: Session, logits: list[torch.Tensor] | None = None) -> list[list[int]]:
    """Three independent questions, then a two-turn conversation (``logits``: gets each independent
    answer's logits at its last prompt position)."""
    answers = [session.answer(q, GREEDY) for q in QUESTIONS]
    if logits is not None:
        logits.extend(a.prefill_logits for a in answers)
    tokens = [a.token_ids for a in answers]
    chat = session.conversation()
    tokens.append(chat.answer(QUESTIONS[0], GREEDY).token_ids)
    tokens.append(chat.answer(QUESTIONS[1], GREEDY).token_ids)
    return tokens


@pytest.mark.parametrize("compression", [CompressionSetting.from_options(), None], ids=["preset45", "off"])
@pytest.mark.parametrize("clip", ["talking", "late_audio"])
def test_reopened_from_disk_answers_like_the_fresh_session(tiny_model, tmp_path, late_audio, compression, clip) -> None:
    video = TALKING if clip == "talking" else late_audio
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    fresh = _open(tiny_model, video, cache, compression)
    assert not _from_disk(fresh) and fresh.prefix_cache["stored"]
    fresh_logits: list[torch.Tensor] = []
    expected = _script(fresh, fresh_logits)
    reopened = _open(tiny_model, video, cache, compression)
    assert _from_disk(reopened) and reopened.media is None and reopened.video is None
    first = reopened.answer(QUESTIONS[0], GREEDY)
    assert first.prefix_source == "disk"
    assert reopened.answer(QUESTIONS[1], GREEDY).prefix_source == "memory"
    assert [first.token_ids, *_script(reopened)[1:]] == expected
    assert torch.equal(reopened.prefix.input_ids, fresh.prefix.input_ids)
    assert torch.equal(first.prefill_logits, fresh_logits[0])  # the same computation, bit for bit
    assert reopened.tokens == fresh.tokens
    assert reopened.group_rows == fresh.group_rows
    assert reopened.summary.to_dict() == fresh.summary.to_dict()
    assert (reopened.config is None) == (compression is None)
    if compression is None and clip == "late_audio":  # and so stock generate, on the clip shape that used to differ
        media = load_media(video, MEDIA)
        stock, _ = stock_generate(tiny_model, full_prompt(tiny_model, media, QUESTIONS[0]), GREEDY.max_new_tokens)
        assert first.token_ids == stock
    info = reopened.prefix_cache
    assert info["source"] == "disk" and info["saved_seconds"] > 0 and Path(info["path"]).is_dir()


def test_the_fast_decoder_on_a_reopened_session(tiny_model, tmp_path, late_audio) -> None:
    """The static-cache decoder (what a GPU uses, its step runs here too) from a disk prefix."""
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    compression = CompressionSetting.from_options()
    fresh = _open(tiny_model, late_audio, cache, compression, decoder="fast")
    expected = _script(fresh)
    reopened = _open(tiny_model, late_audio, cache, compression, decoder="fast")
    assert _from_disk(reopened) and reopened.decoder == fresh.decoder
    assert _script(reopened) == expected


def test_the_key_separates_settings_and_files(tiny_model, tmp_path) -> None:
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(TALKING, copy)
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    _open(tiny_model, TALKING, cache, CompressionSetting.from_options())
    assert _from_disk(_open(tiny_model, copy, cache, CompressionSetting.from_options()))  # same bytes
    assert not _from_disk(_open(tiny_model, TALKING, cache, CompressionSetting.from_options(preset="35")))
    with copy.open("ab") as handle:  # other bytes: another key
        handle.write(b"\0")
    assert not _from_disk(_open(tiny_model, copy, cache, CompressionSetting.from_options()))
    assert len(cache.entries()) == 3


def test_a_half_written_or_corrupt_entry_is_never_read(tiny_model, tmp_path) -> None:
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    compression = CompressionSetting.from_options()
    fresh = _open(tiny_model, TALKING, cache, compression)
    folder = Path(fresh.prefix_cache["path"])
    (folder / MANIFEST_NAME).unlink()  # the manifest is written last: a crash before it
    assert not _from_disk(_open(tiny_model, TALKING, cache, compression))
    folder = Path(_open(tiny_model, TALKING, cache, compression).prefix_cache["path"])  # rewritten, fresh
    data = (folder / TENSORS_NAME).read_bytes()
    (folder / TENSORS_NAME).write_bytes(data[: len(data) // 2])  # truncated tensors, manifest intact
    assert not _from_disk(_open(tiny_model, TALKING, cache, compression))
    # a build folder (no rename yet) is not an entry
    leftovers = [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == [] and len(cache.entries()) == 1


def _tiny_entry(cache: PrefixCache, loaded: Any, name: str, size: int) -> Path:
    key = make_key(name * 64, loaded, media_options=MEDIA, compression=None, system=None)
    stored = cache.store(key, {"x": torch.zeros(size // 4)}, {"note": name})
    assert stored is not None
    return stored


def test_least_recently_used_entries_are_evicted(tiny_model, tmp_path) -> None:
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    a = _tiny_entry(cache, tiny_model, "a", 100_000)
    b = _tiny_entry(cache, tiny_model, "b", 100_000)
    past = time.time() - 100
    os.utime(a / ENTRY_NAME, (past, past))
    os.utime(b / ENTRY_NAME, (past + 10, past + 10))
    cache.max_bytes = 250_000
    c = _tiny_entry(cache, tiny_model, "c", 100_000)  # over the cap: the oldest (a) goes
    assert [e.folder for e in cache.entries()] == [b, c]
    assert cache.info()["bytes"] <= 250_000
    cache.max_bytes = 50_000  # an entry larger than the cap is not stored at all
    assert cache.store(make_key("d" * 64, tiny_model, media_options=MEDIA, compression=None, system=None),
                       {"x": torch.zeros(25_000)}, {}) is None
    assert cache.clear()[0] == 2 and cache.entries() == []


def test_off_when_the_cap_is_zero(tiny_model, tmp_path) -> None:
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=0)
    session = _open(tiny_model, TALKING, cache, None)
    assert session.prefix_cache is None and not _from_disk(session)
    assert not (tmp_path / "prefixes").exists()


WRITER = """
import sys, torch
from omnizip_cli.generation.prefix_cache import CacheKey, PrefixCache
cache = PrefixCache(sys.argv[1], max_bytes=10**12)
key = CacheKey(content="c" * 64, digest="d" * 64, fields={"same": True})
for _ in range(5):
    print(cache.store(key, {"x": torch.arange(2_000_000, dtype=torch.float32)}, {"writer": sys.argv[2]}))
"""


def test_two_processes_writing_the_same_entry(tmp_path) -> None:
    root = tmp_path / "prefixes"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    cache = PrefixCache(root, max_bytes=10**12)
    assert len(cache.entries()) == 1 and not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    from omnizip_cli.generation.prefix_cache import CacheKey

    loaded = cache.load(CacheKey(content="c" * 64, digest="d" * 64, fields={"same": True}), "cpu")
    assert loaded is not None and torch.equal(loaded.tensors["x"], torch.arange(2_000_000, dtype=torch.float32))


# --------------------------------------------------------------------------------------------- interrupts
def test_an_answer_closed_midway_leaves_only_complete_turns(tiny_model) -> None:
    media = load_media(TALKING, MEDIA)
    reference = Session.open(tiny_model, media).conversation()
    expected = [reference.answer(QUESTIONS[0], GREEDY).token_ids, reference.answer(QUESTIONS[1], GREEDY).token_ids]
    chat = Session.open(tiny_model, media).conversation()
    assert chat.answer(QUESTIONS[0], GREEDY).token_ids == expected[0]
    stream = chat.ask(QUESTIONS[2], GREEDY)
    next(stream), next(stream)  # Ctrl-C after two tokens: the chat closes the generator
    stream.close()
    assert chat.turns == 1
    assert chat.answer(QUESTIONS[1], GREEDY).token_ids == expected[1]


def test_ctrl_c_inside_the_question_prefill_leaves_the_cache_consistent(tiny_model) -> None:
    media = load_media(TALKING, MEDIA)
    reference = Session.open(tiny_model, media)
    expected = reference.answer(QUESTIONS[1], GREEDY).token_ids
    session = Session.open(tiny_model, media)
    chat = session.conversation()
    chat.answer(QUESTIONS[0], GREEDY)
    layers = session.text.language_model.layers
    assert len(layers) >= 2

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    handle = layers[1].register_forward_pre_hook(interrupt)  # layer 0 updated its cache, layer 1 not
    try:
        with pytest.raises(KeyboardInterrupt):
            chat.answer(QUESTIONS[2], GREEDY)
    finally:
        handle.remove()
    lengths = {layer.get_seq_length() for layer in session.kv.cache.layers}
    assert len(lengths) == 2  # the shape an interrupt leaves: layers of different lengths
    assert session.answer(QUESTIONS[1], GREEDY).token_ids == expected


@pytest.mark.parametrize("budget", [32000, 300])
def test_the_context_fit_of_a_reopened_session_is_the_fresh_one(tiny_model, tmp_path, budget) -> None:
    """The budget is in the key, the question reserve is not: an entry is reused only when a fresh
    open with this reserve would build the same prefix (same fitted setting, no different re-plan)."""
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    compression = CompressionSetting.from_options()

    def both(reserve: int) -> tuple[Session, Session]:
        via_cache = _open(tiny_model, TALKING, cache, compression, max_prompt_tokens=budget, question_reserve=reserve)
        direct = Session.open(tiny_model, load_media(TALKING, MEDIA), compression=compression,
                              max_prompt_tokens=budget, question_reserve=reserve)
        return via_cache, direct

    first, direct = both(20)
    assert not _from_disk(first) and first.context_fit == direct.context_fit
    again, direct = both(20)
    assert _from_disk(again) and again.context_fit == direct.context_fit
    assert again.prefill.length == direct.prefill.length
    assert again.answer(QUESTIONS[0], GREEDY).token_ids == direct.answer(QUESTIONS[0], GREEDY).token_ids
    other, direct = both(60)  # a longer question: reused only where the fresh path agrees
    assert other.prefill.length == direct.prefill.length and other.context_fit == direct.context_fit
    if budget == 32000:
        assert _from_disk(other)  # far from the budget: the reserve changes nothing
    else:
        assert direct.context_fit.changed and not _from_disk(other)
    assert other.answer(QUESTIONS[0], GREEDY).token_ids == direct.answer(QUESTIONS[0], GREEDY).token_ids


@pytest.mark.parametrize("compression", [CompressionSetting.from_options(), None], ids=["preset45", "off"])
def test_a_qwen3_omni_prefix_with_its_deepstack_rows_reopens_exactly(tiny_qwen3, tmp_path, late_audio,
                                                                    compression) -> None:
    """Qwen3-Omni's prefill carries deepstack rows (a list of tensors) and float positions."""
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    fresh = _open(tiny_qwen3, late_audio, cache, compression)
    assert fresh.prefix_cache["stored"]
    expected = _script(fresh)
    reopened = _open(tiny_qwen3, late_audio, cache, compression)
    assert _from_disk(reopened)
    assert reopened.prefill.position_ids.dtype == fresh.prefill.position_ids.dtype
    assert set(reopened.prefill.lm_kwargs) == set(fresh.prefill.lm_kwargs) == {"visual_pos_masks", "deepstack_visual_embeds"}
    assert _script(reopened) == expected


def test_weights_changed_in_a_copied_checkpoint_are_a_miss(tiny_model, tmp_path) -> None:
    """A copy of the tiny checkpoint, a cached run, then its weights edited in place (same shapes,
    same file size): the next run misses the cache and answers as --no-cache does."""
    from safetensors.torch import load_file, save_file

    from omnizip_cli.models import ModelSpec, load_model

    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_model.path, folder)  # copy2: the copy keeps the files' times
    spec = ModelSpec(model=str(folder), device="cpu", dtype="float32")
    cache = PrefixCache(tmp_path / "prefixes", max_bytes=BIG)
    compression = CompressionSetting.from_options()
    before = load_model(spec)
    first = _open(before, TALKING, cache, compression)
    assert not _from_disk(first) and first.prefix_cache["stored"]
    assert _from_disk(_open(load_model(spec), TALKING, cache, compression))  # unchanged weights: a hit

    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    tensors = load_file(weights)
    for name in tensors:  # the encoders' output projections: another prefix
        if name.startswith(("thinker.visual.merger", "thinker.audio_tower.proj")):
            tensors[name] = tensors[name] * 1.5
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == size

    after = load_model(spec)
    assert after.weights_fingerprint != before.weights_fingerprint
    reopened = _open(after, TALKING, cache, compression)
    assert not _from_disk(reopened) and reopened.prefix_cache["stored"]
    uncached = _open(after, TALKING, False, compression)
    assert not torch.equal(reopened.prefix.prefill.embeds, first.prefix.prefill.embeds)
    assert reopened.answer(QUESTIONS[0], GREEDY).token_ids == uncached.answer(QUESTIONS[0], GREEDY).token_ids
    assert len(cache.entries()) == 2
