"""The disk cache of prepared media prefixes: a later ``ask`` or ``chat`` of the same video skips
media decoding, the processor, both encoders, the saliency and the keep plan.

What an entry holds (one folder under ``$OMNIZIP_CACHE/prefixes``, see
:func:`~omnizip_cli.models.tiny.default_cache_dir`):

* ``prefix.safetensors``: the prefix the language model is prefilled with (the kept, merged
  embeddings, their attention mask and M-RoPE positions, the keep mask over the original sequence,
  tensors the family's language model needs) and the uncompressed prefix input ids (the history
  of the repetition penalty and of :meth:`~omnizip_cli.generation.Session.conversation_ids`);
* ``entry.json``: the key's fields, the prompt templates, the resolved compression config, the
  plan's group rows, the media summary, what fitting the context decided, and the seconds the
  set-up stages took when the entry was built (what a cached open saves);
* ``OMNIZIP_MANIFEST.json``: every file's size and SHA-256, written last
  (:func:`~omnizip_cli.integrity.write_manifest`).

Never pickle: tensors are safetensors, everything else JSON.

**Key**: SHA-256 of the file's bytes (always hashed: no (path, size, mtime) shortcut, so an edited
file can never hit a stale entry; hashing runs at about 1 GB/s), the model (name, resolved path,
revision, family, dtype, device kind, attention implementation, encoder attention path), torch and
transformers versions, the media options, the compression setting as asked (with the file and the
media options it determines the resolved config), the system prompt, the prompt-token budget and
the package version. The folder is named ``<content hash[:16]>-<key hash[:24]>``.

**Writes are atomic**: an entry is built in a ``.tmp-*`` folder of the cache, its manifest last,
then renamed into place under an exclusive lock (``.lock``); when another process got there first,
its entry stays and ours is dropped. A folder whose manifest is missing or does not match its files
(a crash, a full disk, an edit) is never read: it is removed and counts as a miss.

**Size cap**: after each write, least-recently-used entries (by the time they were last written
or read) are removed until the cache holds at most ``OMNIZIP_CACHE_MAX_BYTES`` bytes (default
2 GB; ``0`` turns the cache off).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from ..errors import OmnizipError, UsageError
from .session import Session

if TYPE_CHECKING:
    from ..compression import ContextFit
    from ..models.registry import LoadedModel
    from .sampling import GenerationOptions
    from .stream import GenerationChunk

CACHE_FORMAT = 1
MAX_BYTES_ENV = "OMNIZIP_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 * 1000**3
TENSORS_NAME = "prefix.safetensors"
ENTRY_NAME = "entry.json"
LOCK_NAME = ".lock"
TMP_PREFIX = ".tmp-"
#: The stages a cached open skips (what the entry's ``setup_seconds`` adds up, less the stages that
#: ran beside media decoding: they were not waited for).
SETUP_STAGES = ("media_decode", "preprocess", "audio_encoder", "vision_encoder", "saliency", "keep_plan")
#: Leftover build folders older than this (a killed writer) are removed by the next write.
STALE_TMP_SECONDS = 3600.0


def cache_root() -> Path:
    """Where prefix entries live: ``<cache folder>/prefixes``."""
    from ..models.tiny import default_cache_dir

    return default_cache_dir() / "prefixes"


def max_bytes_from_env() -> int:
    """``$OMNIZIP_CACHE_MAX_BYTES`` (a byte count, ``2e9`` or with a ``K``/``M``/``G`` suffix), else 2 GB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(raw[-1].upper(), 1)
    number = raw[:-1] if scale != 1 else raw
    try:
        value = float(number) * scale
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{MAX_BYTES_ENV} must be a size in bytes (e.g. 2000000000 or 2G), not {raw!r}")
    return int(value)


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _canonical(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"))


def compression_key(compression: Any) -> Any:
    """The compression as asked, JSON-ready: a setting's fields, a fixed config's, or None (off)."""
    from ..compression import CompressionSetting, OmniZipConfig

    if isinstance(compression, str):
        compression = CompressionSetting.from_options(preset=compression)
    if isinstance(compression, CompressionSetting):
        return {"setting": _jsonable(compression)}
    if isinstance(compression, OmniZipConfig):
        return {"config": compression.to_dict()}
    return None


@dataclass(frozen=True)
class CacheKey:
    """``content``: the file's SHA-256; ``digest``: SHA-256 of every key field; ``fields``: those fields."""

    content: str
    digest: str
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        """The entry's folder name (entries of one file share its first part)."""
        return f"{self.content[:16]}-{self.digest[:24]}"


def make_key(
    content: str,
    loaded: LoadedModel,
    *,
    media_options: Any,
    compression: Any,
    system: str | None,
    max_prompt_tokens: int | None,
    revision: str | None = None,
) -> CacheKey:
    """The key of a video's prefix under a model and setting (see the module docstring)."""
    import transformers

    fields = {
        "format": CACHE_FORMAT,
        "omnizip": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "content_sha256": content,
        "model": {
            "name": loaded.name, "path": str(loaded.path), "revision": revision, "family": loaded.adapter.family,
            "dtype": loaded.dtype, "device": torch.device(loaded.device).type,
            "attn_implementation": loaded.attn_implementation,
            "fast_encoder_attention": bool(loaded.fast_encoder_attention),
        },
        "media": _jsonable(media_options.to_dict() if hasattr(media_options, "to_dict") else media_options),
        "compression": compression_key(compression),
        "system": system,
        "max_prompt_tokens": max_prompt_tokens,
    }
    digest = hashlib.sha256(_canonical(fields).encode()).hexdigest()
    return CacheKey(content=content, digest=digest, fields=fields)


@dataclass
class CachedPrefix:
    """An entry read back: its folder, its JSON, its tensors (on the model's device) and the read time."""

    folder: Path
    entry: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    load_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class EntryInfo:
    """One entry on disk: folder, bytes, last use (mtime of its entry file)."""

    folder: Path
    size_bytes: int
    last_used: float


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def _remove(folder: Path) -> None:
    """Remove a folder: renamed aside first, so no reader sees it half-deleted under its name."""
    if not folder.exists():
        return
    aside = folder.with_name(f"{TMP_PREFIX}rm-{uuid.uuid4().hex}")
    try:
        folder.rename(aside)
    except OSError:
        aside = folder
    shutil.rmtree(aside, ignore_errors=True)


class PrefixCache:
    """The prefix entries under ``root`` (default :func:`cache_root`), capped at ``max_bytes``."""

    def __init__(self, root: Path | None = None, max_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.max_bytes = max_bytes_from_env() if max_bytes is None else int(max_bytes)

    @property
    def enabled(self) -> bool:
        """False when the cap is 0 (``OMNIZIP_CACHE_MAX_BYTES=0``): nothing is read or written."""
        return self.max_bytes > 0

    # ------------------------------------------------------------------------------ listing
    def entries(self) -> list[EntryInfo]:
        """Complete-looking entries (with a manifest), least recently used first."""
        from ..integrity import MANIFEST_NAME

        found: list[EntryInfo] = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                last = (folder / ENTRY_NAME).stat().st_mtime
                (folder / MANIFEST_NAME).stat()
            except OSError:
                continue
            found.append(EntryInfo(folder, _folder_bytes(folder), last))
        return sorted(found, key=lambda e: (e.last_used, e.folder.name))

    def has_content(self, content: str) -> bool:
        """Whether any entry was built from a file with this SHA-256 (under any model or setting)."""
        return self.root.is_dir() and any(self.root.glob(f"{content[:16]}-*"))

    def info(self) -> dict[str, Any]:
        """Where the cache is, how many entries and bytes, and the cap."""
        entries = self.entries()
        return {"path": str(self.root), "entries": len(entries), "bytes": sum(e.size_bytes for e in entries),
                "max_bytes": self.max_bytes, "enabled": self.enabled}

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftover build folders); returns (entries removed, bytes freed)."""
        if not self.root.is_dir():
            return 0, 0
        from ..filelock import exclusive_lock

        removed = freed = 0
        with exclusive_lock(self.root / LOCK_NAME):
            for folder in list(self.root.iterdir()):
                if folder.name == LOCK_NAME or not folder.is_dir():
                    continue
                size = _folder_bytes(folder)
                _remove(folder)
                if not folder.name.startswith("."):
                    removed += 1
                freed += size
        return removed, freed

    # ------------------------------------------------------------------------------ reading
    def load(self, key: CacheKey, device: str) -> CachedPrefix | None:
        """The entry of ``key`` when it is complete and intact, else None (a corrupt one is removed)."""
        if not self.enabled:
            return None
        from safetensors.torch import load_file

        from ..integrity import manifest_problem

        folder = self.root / key.name
        if not folder.is_dir():
            return None
        started = time.perf_counter()
        try:
            if manifest_problem(folder, hashes=True) is not None:
                raise ValueError("incomplete or corrupt")
            entry = json.loads((folder / ENTRY_NAME).read_text())
            if not isinstance(entry, dict) or entry.get("key") != _jsonable(key.fields):
                raise ValueError("key mismatch")
            tensors = load_file(str(folder / TENSORS_NAME), device=str(device))
        except FileNotFoundError:
            return None  # removed meanwhile (evicted or cleared by another process)
        except Exception:  # noqa: BLE001 - anything wrong with an entry makes it a miss, never an error
            self._drop(folder)
            return None
        try:
            os.utime(folder / ENTRY_NAME)  # least-recently-used order
        except OSError:
            pass
        return CachedPrefix(folder, entry, tensors, time.perf_counter() - started, _folder_bytes(folder))

    def _drop(self, folder: Path) -> None:
        from ..filelock import exclusive_lock

        try:
            with exclusive_lock(self.root / LOCK_NAME, timeout=30.0):
                _remove(folder)
        except (OmnizipError, OSError):  # a read-only cache: the bad entry stays, and stays unread
            pass

    # ------------------------------------------------------------------------------ writing
    def store(self, key: CacheKey, tensors: dict[str, torch.Tensor], entry: dict[str, Any], *,
              replace: bool = False) -> Path | None:
        """Write an entry atomically (see the module docstring), then evict down to the cap.

        An intact entry already under the key stays (another writer's, with the same content)
        unless ``replace`` (it was found unusable for this request). Returns the entry's folder, or
        None when the cache is off or the entry alone exceeds the cap.
        """
        if not self.enabled:
            return None
        from safetensors.torch import save_file

        from ..filelock import exclusive_lock
        from ..integrity import write_manifest

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(tmp / TENSORS_NAME),
                      metadata={"format": str(CACHE_FORMAT)})
            (tmp / ENTRY_NAME).write_text(json.dumps({**_jsonable(entry), "key": _jsonable(key.fields)}, indent=1))
            write_manifest(tmp)
            size = _folder_bytes(tmp)
            if size > self.max_bytes:
                shutil.rmtree(tmp, ignore_errors=True)
                return None
            target = self.root / key.name
            with exclusive_lock(self.root / LOCK_NAME):
                if target.exists():
                    from ..integrity import manifest_problem

                    if not replace and manifest_problem(target, hashes=False) is None:
                        shutil.rmtree(tmp, ignore_errors=True)  # another writer got there first
                        return target
                    _remove(target)
                os.rename(tmp, target)
                self._evict_locked(keep=target)
            return target
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def evict(self) -> list[Path]:
        """Remove least-recently-used entries until the cache fits its cap; returns what was removed."""
        from ..filelock import exclusive_lock

        if not self.root.is_dir():
            return []
        with exclusive_lock(self.root / LOCK_NAME):
            return self._evict_locked()

    def _evict_locked(self, keep: Path | None = None) -> list[Path]:
        now = time.time()
        for folder in self.root.glob(f"{TMP_PREFIX}*"):
            try:
                if now - folder.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        removed: list[Path] = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and entry.folder == keep:
                continue
            _remove(entry.folder)
            total -= entry.size_bytes
            removed.append(entry.folder)
        return removed


# ---------------------------------------------------------------------------------------------- #
# Sessions to and from entries


def _fit_inputs(session: Session) -> dict[str, int]:
    """The token counts :meth:`Session.from_prepared` fits the context with (computed the same way)."""
    tokens = session.tokens
    grid = session.prepared.tensors.get("video_grid_thw")
    return {"audio": tokens.audio.before, "video": tokens.video.before,
            "text": session.prepared.length - tokens.audio.before - tokens.video.before,
            "frames": int(grid[0][0]) * 2 if grid is not None else 0}


def _lm_kwargs_tensors(lm_kwargs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The family's language-model arguments as named tensors and their layout (a tensor, or a list
    of tensors such as Qwen3-Omni's deepstack rows); None when one is neither."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for name, value in lm_kwargs.items():
        if isinstance(value, torch.Tensor):
            tensors[f"lm_kwargs.{name}"] = value
            layout[name] = "tensor"
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
            tensors.update({f"lm_kwargs.{name}.{i}": v for i, v in enumerate(value)})
            layout[name] = {"list": len(value)}
        else:
            return None
    return tensors, layout


def _lm_kwargs_from(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    return {name: tensors[f"lm_kwargs.{name}"] if kind == "tensor"
            else [tensors[f"lm_kwargs.{name}.{i}"] for i in range(int(kind["list"]))]
            for name, kind in layout.items()}


def _first_fit(compression: Any, inputs: dict[str, int], budget: int, reserve: int) -> ContextFit | None:
    """What :func:`~omnizip_cli.compression.fit_to_context` decides before planning (None: a fixed
    config, which the fresh path only checks), as :meth:`Session.from_prepared` does."""
    from ..compression import fit_to_context
    from .session import _as_setting

    setting = _as_setting(compression)
    if setting is None:
        return None
    return fit_to_context(setting, audio=inputs["audio"], video=inputs["video"], text=inputs["text"] + reserve,
                          budget=budget, frames=inputs["frames"])


def entry_of_session(
    session: Session,
    *,
    compression: Any,
    max_prompt_tokens: int | None,
    question_reserve: int,
    setup_seconds: float,
    stage_seconds: dict[str, float],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and JSON of a freshly opened session's entry; None when it cannot be cached
    (language-model arguments that are not tensors or lists of tensors)."""
    prefill = session.prefill
    extra = _lm_kwargs_tensors(prefill.lm_kwargs)
    if extra is None:
        return None
    tensors = {
        "prefill.embeds": prefill.embeds, "prefill.attention_mask": prefill.attention_mask,
        "prefill.position_ids": prefill.position_ids, "input_ids": session.encoded.input_ids, **extra[0],
    }
    if prefill.kept is not None:
        tensors["prefill.kept"] = prefill.kept
    inputs = _fit_inputs(session)
    fit = session.context_fit
    replanned = False
    if max_prompt_tokens is not None and fit is not None:
        first = _first_fit(compression, inputs, max_prompt_tokens, question_reserve)
        replanned = first is None or first.setting != fit.setting
    prepared = session.prepared
    summary = session.summary
    return tensors, {
        "created": time.time(),
        "setup_seconds": setup_seconds,
        "stage_seconds": stage_seconds,
        "templates": dataclasses.asdict(prepared.templates),
        "prepared": {"kind": prepared.kind, "use_audio_in_video": prepared.use_audio_in_video,
                     "system": prepared.system},
        "encoded": {"kind": session.encoded.kind, "video_grid_thw": session.encoded.video_grid_thw,
                    "hidden_size": int(prefill.embeds.shape[-1]), "has_audio_scores":
                        session.encoded.audio_scores is not None},
        "config": session.config.to_dict() if session.config is not None else None,
        "group_rows": session.group_rows,
        "summary": summary.to_dict() if summary is not None else None,
        "fit_inputs": inputs,
        "fit": {"reserve": question_reserve, "replanned": replanned,
                "context_fit": _fit_json(fit) if fit is not None else None},
        "lm_kwargs": extra[1],
    }


def _fit_json(fit: ContextFit) -> dict[str, Any]:
    return {"budget": fit.budget, "prompt_before": fit.prompt_before, "setting": _jsonable(fit.setting),
            "reason": fit.reason, "frames_sampled": fit.frames_sampled,
            "frames_fit_uncompressed": fit.frames_fit_uncompressed}


def _fit_from_json(data: dict[str, Any]) -> ContextFit:
    from ..compression import CompressionSetting, ContextFit

    setting = dict(data["setting"])
    setting["overrides"] = tuple((k, v) for k, v in setting.get("overrides", ()))
    return ContextFit(data["budget"], data["prompt_before"], CompressionSetting(**setting), data["reason"],
                      data["frames_sampled"], data["frames_fit_uncompressed"])


def fit_for_entry(entry: dict[str, Any], *, compression: Any, max_prompt_tokens: int | None, question_reserve: int,
                  prefill_length: int) -> tuple[bool, ContextFit | None]:
    """Whether a fresh open with this question reserve would build exactly this entry, and its fit.

    The budget is part of the key; the reserve (the longest question's tokens) is not, so that other
    questions still hit. The fresh path fits the context in two steps
    (:meth:`Session.from_prepared`): a setting chosen before planning (a pure function of the token
    counts, recomputed here), then stronger re-plans while the kept prompt is over budget. An entry
    made without re-plans is valid when the first step chooses the same setting and the kept prefix
    plus this reserve fits; one made with re-plans only for the same reserve.
    """
    if max_prompt_tokens is None:
        return True, None
    from ..compression import ContextTooLong

    fit = entry["fit"]
    if fit["replanned"]:
        same = fit["reserve"] == question_reserve and fit["context_fit"] is not None
        return same, (_fit_from_json(fit["context_fit"]) if same else None)
    try:
        first = _first_fit(compression, entry["fit_inputs"], max_prompt_tokens, question_reserve)
    except ContextTooLong:
        return False, None  # the fresh path refuses it, with its own message
    stored = fit["context_fit"]
    if (first is None) != (stored is None):
        return False, None
    if first is not None and _canonical(first.setting) != _canonical(stored["setting"]):
        return False, None
    return prefill_length + question_reserve <= max_prompt_tokens, first


class CachedSession(Session):
    """A :class:`Session` reopened from a disk entry: no decoded media, no encoded embeddings, no plan.

    It answers exactly as the session that built the entry (same prefill, same prefix ids, same
    templates). What needs the encoder output cannot run: :meth:`with_compression` and the keep map
    (which also needs the decoded frames). ``summary`` and ``group_rows`` come from the entry;
    ``prefix_cache`` says where the prefix came from and what the cache saved.
    """

    _summary: Any = None
    _group_rows: list[dict[str, Any]] = []  # noqa: RUF012 - replaced per instance
    prefix_cache: dict[str, Any] | None = None

    @classmethod
    def from_cache(cls, loaded: LoadedModel, cached: CachedPrefix, *, media_path: str | Path | None = None,
                   context_fit: ContextFit | None = None, **kwargs: Any) -> CachedSession:
        """Build the session from an entry read by :meth:`PrefixCache.load` (``kwargs``: decoder, warn, ...)."""
        from ..compression import OmniZipConfig
        from ..measure import StageTimer
        from ..media import MediaSummary
        from ..models.base import EncodedMedia, PrefillInputs, PreparedPrompt, PromptTemplates

        entry, tensors = cached.entry, cached.tensors
        input_ids = tensors["input_ids"].long()
        hidden = int(entry["encoded"]["hidden_size"])
        embeds = tensors["prefill.embeds"]
        prepared = PreparedPrompt(
            tensors={"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)},
            kind=entry["prepared"]["kind"], use_audio_in_video=entry["prepared"]["use_audio_in_video"],
            templates=PromptTemplates(**entry["templates"]), system=entry["prepared"]["system"])
        grid = entry["encoded"]["video_grid_thw"]
        encoded = EncodedMedia(  # the ids only: embeddings and positions of the whole prefix are not stored
            input_ids=input_ids, embeds=embeds.new_zeros((1, 0, hidden)),
            attention_mask=torch.ones_like(input_ids),
            position_ids=tensors["prefill.position_ids"][..., :0],
            video_grid_thw=tuple(grid) if grid is not None else None, audio_scores=None,
            kind=entry["encoded"]["kind"])
        kept = tensors.get("prefill.kept")
        prefill = PrefillInputs(
            embeds=embeds, attention_mask=tensors["prefill.attention_mask"],
            position_ids=tensors["prefill.position_ids"], kept=kept.bool() if kept is not None else None,
            lm_kwargs=_lm_kwargs_from(tensors, entry["lm_kwargs"]))
        config = OmniZipConfig(**entry["config"]) if entry["config"] is not None else None
        timer = kwargs.pop("timer", None) or StageTimer(device=loaded.device)
        session = cls(loaded, prepared, encoded, config, media=None, timer=timer, prefill=prefill, **kwargs)
        session.context_fit = context_fit
        summary = entry["summary"]
        if summary is not None:
            summary = dict(summary)
            summary["warnings"] = tuple(summary.get("warnings", ()))
            if media_path is not None:
                summary["path"] = str(media_path)
            summary = MediaSummary(**summary)
        session._summary = summary
        session._group_rows = list(entry["group_rows"])
        session._prefix_source = "disk"
        session.prefix_cache = {
            "source": "disk", "path": str(cached.folder), "entry_bytes": cached.size_bytes,
            "load_seconds": cached.load_seconds, "saved_seconds": float(entry["setup_seconds"]),
            "stage_seconds": dict(entry.get("stage_seconds", {})),
        }
        return session

    @property
    def summary(self) -> Any:
        return self._summary

    @property
    def group_rows(self) -> list[dict[str, Any]]:
        return list(self._group_rows)

    def with_compression(self, compression: Any) -> Session:
        raise OmnizipError("a session reopened from the prefix cache cannot change its compression",
                           hint="open the video again with --no-cache")

    def ask(self, question: str, options: GenerationOptions | None = None, *, follow_up: bool = False
            ) -> Iterator[GenerationChunk]:
        """As :meth:`Session.ask`; the first prefill of the prefix read from disk says ``prefix_source="disk"``."""
        from_disk = self._cache is None
        inner = super().ask(question, options, follow_up=follow_up)
        try:
            for chunk in inner:
                if chunk.stats is not None and from_disk:
                    chunk.stats.prefix_source = "disk"
                yield chunk
        finally:
            inner.close()


def open_with_cache(
    loaded: LoadedModel,
    video: Path,
    *,
    cache: PrefixCache | None,
    open_fresh: Any,
    media_options: Any,
    compression: Any,
    system: str | None,
    max_prompt_tokens: int | None = None,
    question_reserve: int = 0,
    revision: str | None = None,
    content: str | None = None,
    **session_kwargs: Any,
) -> Session:
    """A session on ``video``: from the cache when a valid entry exists, else ``open_fresh()`` (then stored).

    ``open_fresh``: a function of no arguments that decodes, encodes and plans (returns a Session);
    ``session_kwargs``: what :meth:`CachedSession.from_cache` passes to the Session (decoder, warn,
    timer). The session's ``prefix_cache`` attribute says where its prefix came from, how long the
    read took and what it saved (``source`` ``"disk"``), or whether it was stored (``"fresh"``).
    """
    if cache is None or not cache.enabled:
        return open_fresh()
    content = content or content_hash(video)
    key = make_key(content, loaded, media_options=media_options, compression=compression, system=system,
                   max_prompt_tokens=max_prompt_tokens, revision=revision)
    cached = cache.load(key, loaded.device)
    if cached is not None:
        valid, fit = fit_for_entry(cached.entry, compression=compression, max_prompt_tokens=max_prompt_tokens,
                                   question_reserve=question_reserve,
                                   prefill_length=int(cached.tensors["prefill.embeds"].shape[1]))
        if valid:
            return CachedSession.from_cache(loaded, cached, media_path=video, context_fit=fit, **session_kwargs)
    session = open_fresh()
    stages = {name: session.timer.seconds(name) for name in SETUP_STAGES if name in session.timer.stages}
    waited = sum(seconds for name, seconds in stages.items() if not session.timer.stages[name].overlapped)
    built = entry_of_session(session, compression=compression, max_prompt_tokens=max_prompt_tokens,
                             question_reserve=question_reserve, setup_seconds=waited,
                             stage_seconds=stages)
    stored: Path | None = None
    if built is not None:
        try:
            stored = cache.store(key, *built, replace=cached is not None)
        except OSError as exc:  # a full or read-only cache folder must not fail the question
            warn = session_kwargs.get("warn")
            if warn is not None:
                warn(f"the prefix cache could not be written ({exc.strerror or exc}): {cache.root}")
    session.prefix_cache = {"source": "fresh", "path": str(stored) if stored is not None else None,  # type: ignore[attr-defined]
                            "stored": stored is not None}
    return session
