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
    """Where built artefacts are cached: ``$OMNIZIP_CACHE``, else ``$XDG_CACHE_HOME/omnizip``.

    Raises
    ------
    UsageError
        The folder is a file, or a file stands where one of its parent folders should be (exit
        code 2, as for a bad ``OMNIZIP_CACHE_MAX_BYTES``): one line naming the variable, instead of
        "File exists" or "Not a directory" when something is first written there.
    """
    if env := os.environ.get("OMNIZIP_CACHE"):
        folder, source = Path(env).expanduser(), f"OMNIZIP_CACHE={env}"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = xdg or Path.home() / ".cache"
        folder = Path(base).expanduser() / "omnizip"
        source = f"the cache folder {folder} (from XDG_CACHE_HOME={xdg})" if xdg else f"the cache folder {folder}"
    problem = cache_dir_problem(folder)
    if problem is not None:
        from ..errors import UsageError

        raise UsageError(
            f"{source} {problem}",
            hint="set OMNIZIP_CACHE to a folder (it is created if missing), or unset it for ~/.cache/omnizip",
        )
    return folder


def cache_dir_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be a cache folder because of a file in the way (None: a folder, or nothing yet).

    Only a file where a folder must be is a problem here; permissions and a full disk are found
    (and said) where something is written.
    """
    try:
        mode = os.stat(folder).st_mode
    except NotADirectoryError:
        return "is not a usable folder: a part of its path is a file"
    except (OSError, ValueError):
        return None  # missing (created later) or not searchable (said when it is used)
    import stat

    return None if stat.S_ISDIR(mode) else "is a file, not a folder"


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


def tiny_lock_path(path: Path) -> Path:
    """The lock file that serialises building ``path``: a sibling ``<name>.lock``."""
    return path.with_name(path.name + ".lock")


def build_tiny_checkpoint(adapter: ModelAdapter, path: Path) -> Path:
    """Build ``adapter``'s tiny checkpoint into ``path`` and return ``path``.

    Deterministic. Safe against concurrent callers: holds an exclusive lock on
    :func:`tiny_lock_path` while building into a private temporary sibling folder, writes the
    integrity manifest last, and renames the finished folder into place. An existing folder at
    ``path`` is first renamed aside, then removed (never deleted while another process may read it).
    """
    from ..filelock import exclusive_lock

    with exclusive_lock(tiny_lock_path(path)):
        return _build_locked(adapter, path)


def _build_locked(adapter: ModelAdapter, path: Path) -> Path:
    """The build itself; the caller holds :func:`tiny_lock_path`'s lock."""
    import shutil
    import tempfile

    from ..integrity import write_manifest

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-build-", dir=path.parent))
    try:
        adapter.build_tiny(staging)
        (staging / TINY_MARKER).write_text(TINY_WARNING + "\n")
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
    from ..integrity import manifest_problem

    problem = manifest_problem(path, hashes=True)
    return None if problem is None else f"{problem[0]} {problem[1]}"


def ensure_tiny_checkpoint(adapter: ModelAdapter, cache_dir: Path | None = None) -> Path:
    """The cached tiny checkpoint folder of ``adapter``'s family, built (or rebuilt) first if needed.

    The fast path (a complete, intact folder) takes no lock. Otherwise the caller takes the build
    lock, checks again (another process may just have built it), and builds only if the folder is
    still missing, incomplete or corrupt (a truncated ``model.safetensors``, a missing
    ``tokenizer.json``, a folder from before manifests existed...). Concurrent first runs thus
    build once; the others wait for the lock and then load the finished folder, which is never
    replaced while it is intact.
    """
    import logging

    from ..errors import ModelLoadError
    from ..filelock import exclusive_lock

    path = tiny_model_dir(adapter, cache_dir)
    log = logging.getLogger(__name__)
    try:
        if tiny_checkpoint_problem(path) is None:
            return path
        with exclusive_lock(
            tiny_lock_path(path), on_wait=lambda: log.info("waiting for another process to build %s", path)
        ):
            problem = tiny_checkpoint_problem(path)
            if problem is None:
                return path
            if path.exists():
                log.warning("the cached tiny checkpoint %s is incomplete or corrupt (%s): rebuilding it", path, problem)
            _build_locked(adapter, path)
    except OSError as exc:  # a read-only or full cache folder: one line, not a traceback
        problem = cache_dir_problem(path.parent)
        if problem is not None:  # a file in the way ("File exists", "Not a directory")
            reason = f"{path.parent} {problem}"
        elif isinstance(exc, PermissionError):
            reason = f"permission denied on {exc.filename or path.parent}"
        else:
            reason = f"{exc.strerror or exc}"
        raise ModelLoadError(
            f"cannot build the tiny checkpoint in {path.parent}: {reason}",
            hint="set OMNIZIP_CACHE to a writable folder with a few MB free",
        ) from exc
    return path


def is_tiny_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a tiny random checkpoint built by this module."""
    return (Path(path) / TINY_MARKER).is_file()
