"""Tiny random checkpoints, built offline, for tests, demos and CI.

No weights can be downloaded where this project is tested, so ``--model tiny`` builds (once, then
caches) a complete checkpoint of a model family with random weights: a byte-level BPE tokenizer
trained here on a small corpus, carrying the family's real special tokens and chat template; the
family's real preprocessing components in its stock processor; the model in the **full hub layout**
(``thinker.*`` weights), so the loader is exercised on the layout real checkpoints have. The
family's adapter supplies the configuration (:meth:`~omnizip_cli.models.base.ModelAdapter.build_tiny`).

The folder is then loaded back through exactly the same code path as a real checkpoint. Its answers
are meaningless: the weights are random.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ModelAdapter

TINY_VERSION = "v1"
TINY_MARKER = "OMNIZIP_TINY_MODEL"
TINY_WARNING = "tiny random model: the weights are random and the answer is meaningless"

# The pre-tokenizer split pattern of Qwen2 / Qwen2.5 / Qwen3 tokenizers.
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
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


def tiny_model_dir(adapter: ModelAdapter, cache_dir: Path | None = None) -> Path:
    """The folder a family's tiny checkpoint lives in (built or not)."""
    folder = "tiny-qwen2.5-omni" if adapter.family == "qwen2_5_omni" else f"tiny-{adapter.family}"
    return (cache_dir or default_cache_dir()) / f"{folder}-{TINY_VERSION}"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded, restoring its state afterwards."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def build_tokenizer(special_tokens: list[str], named_tokens: dict[str, str], chat_template: str) -> Any:
    """Train a small byte-level BPE offline and wrap it as a ``Qwen2Tokenizer`` with a family's specials.

    The specials get the ids after the BPE vocabulary, in the order given.
    """
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
    for offset, token in enumerate(special_tokens):
        vocab[token] = base + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=named_tokens,
        errors="replace",
    )
    tokenizer.add_special_tokens({"extra_special_tokens": special_tokens[1:]}, replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_checkpoint(adapter: ModelAdapter, path: Path) -> Path:
    """Build ``adapter``'s tiny checkpoint into ``path`` and return ``path``.

    Deterministic. Written to a temporary sibling folder first and renamed, so a half-written folder
    is never mistaken for a checkpoint.
    """
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        adapter.build_tiny(staging)
        (staging / TINY_MARKER).write_text(TINY_WARNING + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def ensure_tiny_checkpoint(adapter: ModelAdapter, cache_dir: Path | None = None) -> Path:
    """Return the cached tiny checkpoint folder of ``adapter``'s family, building it first if it is missing."""
    path = tiny_model_dir(adapter, cache_dir)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        build_tiny_checkpoint(adapter, path)
    return path


def is_tiny_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a tiny random checkpoint built by this module."""
    return (Path(path) / TINY_MARKER).is_file()
