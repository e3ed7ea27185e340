"""A tiny random Qwen2.5-Omni checkpoint, built offline, for tests, demos and CI.

No weights can be downloaded where this project is tested, so ``--model tiny`` builds (once, then
caches) a complete Qwen2.5-Omni checkpoint with random weights:

* a byte-level BPE tokenizer trained here on a small corpus, carrying the real Qwen2.5-Omni special
  tokens and chat template;
* the real preprocessing components (``WhisperFeatureExtractor`` with the Omni values, the Qwen2-VL
  image and video processors) wrapped in the stock ``Qwen2_5OmniProcessor``;
* a ``Qwen2_5OmniForConditionalGeneration`` in the **full hub layout** (``thinker.*`` weights under a
  ``Qwen2_5OmniConfig``), without talker, so the loader is exercised on the layout real checkpoints
  have.

The folder is then loaded back through exactly the same code path as a real checkpoint
(:func:`omnizip_cli.loading.load_model`). Its answers are meaningless: the weights are random.

Traps handled here (see ``shared/docs/qwen-omni-notes.md``): ``initializer_range=0.2`` so the tiny
model is position-sensitive (at 0.02 wrong M-RoPE ids would not change its output), and
``vocab_size == len(tokenizer)`` so every generated id decodes to text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TINY_MODEL_NAME = "tiny"
TINY_VERSION = "v1"
TINY_WARNING = "tiny random model: the weights are random and the answer is meaningless"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
]
NAMED_SPECIAL_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# The pre-tokenizer split pattern of Qwen2 / Qwen2.5 tokenizers.
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5-Omni's chat template (as shipped with the hub checkpoints' processor).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "What is said in the video? What happens in this clip? Describe the scene and the sound.",
    "A person speaks while a red square moves across a blue background.",
    "The answer is yes. The answer is no. There are two people, three cars and one dog.",
    "Listen to the audio and watch the frames, then answer the question briefly.",
    "Hello, this is a short sample recording made for testing the omnizip command line tool.",
    "You are a helpful assistant. system user assistant",
    "0123456789 .,;:!?()[]{}'\"-+*/=<>@#$%&_|~^`\\",
]
BPE_VOCAB_SIZE = 400


def default_cache_dir() -> Path:
    """Where built artefacts are cached: ``$OMNIZIP_CACHE``, else ``$XDG_CACHE_HOME/omnizip``."""
    if env := os.environ.get("OMNIZIP_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "omnizip"


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    """The folder the tiny checkpoint lives in (built or not)."""
    return (cache_dir or default_cache_dir()) / f"tiny-qwen2.5-omni-{TINY_VERSION}"


def build_tokenizer() -> Any:
    """Train a small byte-level BPE offline and wrap it as a ``Qwen2Tokenizer`` with the Omni specials."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=[],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    base = len(vocab)
    for offset, token in enumerate(SPECIAL_TOKENS):
        vocab[token] = base + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=NAMED_SPECIAL_TOKENS,
        errors="replace",
    )
    tokenizer.add_special_tokens({"extra_special_tokens": SPECIAL_TOKENS[1:]}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer: Any) -> Any:
    """The stock ``Qwen2_5OmniProcessor`` around the tiny tokenizer and the real Omni preprocessing."""
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        n_fft=400,
        chunk_length=300,
        padding_value=0.0,
        return_attention_mask=True,
    )
    pixels = {"min_pixels": 3136, "max_pixels": 12845056}
    image_processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
    )
    return Qwen2_5OmniProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_thinker_config(tokenizer: Any, hidden: int = 64, init: float = 0.2) -> Any:
    """A ``Qwen2_5OmniThinkerConfig`` small enough for CPU tests that runs every real code path."""
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # head_dim 16: the M-RoPE sections sum to 8
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        tie_word_embeddings=False,
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        bos_token_id=ids["<|im_start|>"],
        initializer_range=init,
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        n_window=100,
        output_dim=hidden,
        max_source_positions=1500,
        initializer_range=init,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        out_hidden_size=hidden,
        fullatt_block_indexes=[1],
        initializer_range=init,
    )
    return Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config=vision,
        text_config=text,
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") if "user" in tokenizer.get_vocab() else 0,
        position_id_per_seconds=25,
        seconds_per_chunk=2,
        initializer_range=init,
    )


def tiny_lock_path(path: Path) -> Path:
    """The lock file that serialises building ``path``: a sibling ``<name>.lock``."""
    return path.with_name(path.name + ".lock")


def build_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Build the tiny checkpoint into ``path`` (full hub layout) and return ``path``.

    Deterministic for a given ``seed``. Safe against concurrent callers (issue 18, case 1): holds an
    exclusive lock on :func:`tiny_lock_path` while building into a private temporary sibling folder,
    writes the integrity manifest last, and renames the finished folder into place. An existing
    folder at ``path`` is first renamed aside, then removed.
    """
    from .filelock import exclusive_lock

    with exclusive_lock(tiny_lock_path(path)):
        return _build_locked(path, seed)


def _build_locked(path: Path, seed: int = 0) -> Path:
    """The build itself; the caller holds :func:`tiny_lock_path`'s lock."""
    import shutil
    import tempfile

    import torch
    from transformers import GenerationConfig
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniForConditionalGeneration

    from transformers.utils import logging as hf_logging

    from .integrity import write_manifest

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused talker defaults warn about ids outside the tiny vocab
    try:
        tokenizer = build_tokenizer()
        processor = build_processor(tokenizer)
        thinker_config = tiny_thinker_config(tokenizer)
        config = Qwen2_5OmniConfig(thinker_config=thinker_config.to_dict(), enable_audio_output=False)
    finally:
        hf_logging.set_verbosity(verbosity)

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2_5OmniForConditionalGeneration(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=[thinker_config.text_config.eos_token_id, thinker_config.text_config.pad_token_id],
        pad_token_id=thinker_config.text_config.pad_token_id,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-build-", dir=path.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "OMNIZIP_TINY_MODEL").write_text(TINY_WARNING + "\n")
        for file in staging.iterdir():  # durable before the manifest says "complete"
            _fsync_file(file)
        write_manifest(staging)  # last: its presence means the folder is complete
        stale = None
        if path.exists() or path.is_symlink():
            # Never delete in place: rename aside (atomic), then put the new folder in, then remove.
            stale = Path(tempfile.mkdtemp(prefix=f".{path.name}-stale-", dir=path.parent))
            path.rename(stale / "old")
        staging.rename(path)
        _fsync_dir(path.parent)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _remove_leftovers(path: Path) -> None:
    """Remove staging/stale folders of ``path`` left by killed builders (the caller holds the lock)."""
    import shutil

    for prefix in (f".{path.name}-build-", f".{path.name}-stale-"):
        for leftover in path.parent.glob(prefix + "*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def _fsync_file(file: Path) -> None:
    if file.is_file():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)


def tiny_checkpoint_problem(path: Path) -> str | None:
    """Why the cached tiny checkpoint at ``path`` is not usable (``None`` when it is complete and intact).

    The full check against the manifest (sizes and SHA-256 of ~1 MB: a few milliseconds).
    """
    from .integrity import manifest_problem

    problem = manifest_problem(path, hashes=True)
    return None if problem is None else f"{problem[0]} {problem[1]}"


def ensure_tiny_checkpoint(cache_dir: Path | None = None) -> Path:
    """Return the cached tiny checkpoint folder, building (or rebuilding) it first if needed.

    Issue 18, cases 1-2. The fast path (a complete, intact folder) takes no lock. Otherwise the
    caller takes the build lock, checks again (another process may just have built it), and builds
    only if the folder is still missing, incomplete or corrupt (a truncated ``model.safetensors``, a
    missing ``tokenizer.json``, a folder from before manifests existed...). Concurrent first runs
    thus build once; the others wait for the lock and then load the finished folder, which is never
    replaced while it is intact.
    """
    import logging

    from .filelock import exclusive_lock

    path = tiny_model_dir(cache_dir)
    if tiny_checkpoint_problem(path) is None:
        return path
    from .errors import ModelLoadError

    log = logging.getLogger(__name__)
    try:
        with exclusive_lock(
            tiny_lock_path(path), on_wait=lambda: log.info("waiting for another process to build %s", path)
        ):
            problem = tiny_checkpoint_problem(path)
            if problem is None:
                return path
            if path.exists():
                log.warning("the cached tiny checkpoint %s is incomplete or corrupt (%s): rebuilding it", path, problem)
            _build_locked(path)
    except OSError as exc:  # a read-only or full cache folder: one line, not a traceback
        raise ModelLoadError(
            f"cannot build the tiny checkpoint in {path.parent}: {exc.strerror or exc}",
            hint="set OMNIZIP_CACHE to a writable folder with a few MB free",
        ) from exc
    return path


def is_tiny_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a tiny random checkpoint built by this module."""
    return (Path(path) / "OMNIZIP_TINY_MODEL").is_file()
