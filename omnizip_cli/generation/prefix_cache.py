"""The disk cache of prepared media prefixes: a later opening of the same video (``ask``, ``chat``,
``Session.open``: :mod:`.opening`) skips media decoding, the processor, both encoders, the saliency
and the keep plan. What is stored is a :class:`~.prefix.PreparedPrefix` (:func:`prefix_to_entry`,
:func:`prefix_from_entry`).

What an entry holds (one folder under ``$OMNIZIP_CACHE/prefixes``, see
:func:`~omnizip_cli.models.tiny.default_cache_dir`):

* ``prefix.safetensors``: the prefix the language model is prefilled with (the kept, merged
  embeddings, their attention mask and M-RoPE positions, the keep mask over the original sequence,
  tensors the family's language model needs) and the uncompressed prefix input ids (the history
  of the repetition penalty and of a conversation's ids);
* ``entry.json``: the key's fields, the prompt templates, the resolved compression config, the
  plan's group rows, the media summary, the token counts, what the prompt-budget rule decided and
  the plans it made (so that it can be replayed for another question reserve), and the seconds the
  set-up stages took when the entry was built (what a cached open saves);
* ``OMNIZIP_MANIFEST.json``: every file's size and SHA-256, written last
  (:func:`~omnizip_cli.integrity.write_manifest`).

Never pickle: tensors are safetensors, everything else JSON.

**Key**: SHA-256 of the file's bytes (always hashed: no (path, size, mtime) shortcut, so an edited
file can never hit a stale entry; hashing runs at about 1 GB/s), the model (name, resolved path,
revision, family, dtype, device kind, attention implementation, encoder attention path, and the
fingerprint of its files taken at load, :mod:`omnizip_cli.models.fingerprint`: weights changed in
the same folder, or a new hub commit, are a miss), torch and
transformers versions, the media options, the compression setting as asked (with the file and the
media options it determines the resolved config), the system prompt and the package version. Not the
prompt budget or the question reserve: they change the prefix only through the setting the budget
rule chooses, which is replayed on the entry (:func:`~.prefix.refit_cached`; a request that would
build another prefix rebuilds and replaces it), so that ``--max-new-tokens 8`` then ``16`` share one
entry. The folder is named ``<content hash[:16]>-<key hash[:24]>``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from ..errors import OmnizipError, UsageError
from .prefix import canonical, jsonable

if TYPE_CHECKING:
    from ..compression import ContextFit
    from ..models.registry import LoadedModel
    from .prefix import PreparedPrefix

CACHE_FORMAT = 2
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
    from ..integrity import sha256_file

    return sha256_file(Path(path))


def compression_key(compression: Any) -> Any:
    """The compression as asked, JSON-ready: a setting's fields, a fixed config's, or None (off)."""
    from ..compression import CompressionSetting, OmniZipConfig

    if isinstance(compression, str):
        compression = CompressionSetting.from_options(preset=compression)
    if isinstance(compression, CompressionSetting):
        return {"setting": jsonable(compression)}
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
            "weights": getattr(loaded, "weights_fingerprint", ""),
            # a thinker split with --device-map: where its encoders ran may change the last bits
            "devices": sorted(getattr(loaded, "weights_per_device", {}) or {}),
        },
        "media": jsonable(media_options.to_dict() if hasattr(media_options, "to_dict") else media_options),
        "compression": compression_key(compression),
        "system": system,
    }
    digest = hashlib.sha256(canonical(fields).encode()).hexdigest()
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
            if not isinstance(entry, dict) or entry.get("key") != jsonable(key.fields):
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
            (tmp / ENTRY_NAME).write_text(json.dumps({**jsonable(entry), "key": jsonable(key.fields)}, indent=1))
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
# Prepared prefixes to and from entries


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


def _fit_json(fit: ContextFit | None) -> dict[str, Any] | None:
    if fit is None:
        return None
    return {"budget": fit.budget, "prompt_before": fit.prompt_before, "setting": jsonable(fit.setting),
            "reason": fit.reason, "frames_sampled": fit.frames_sampled,
            "frames_fit_uncompressed": fit.frames_fit_uncompressed}


def _fit_from_json(data: dict[str, Any] | None) -> ContextFit | None:
    from ..compression import CompressionSetting, ContextFit

    if data is None:
        return None
    setting = dict(data["setting"])
    setting["overrides"] = tuple((k, v) for k, v in setting.get("overrides", ()))
    return ContextFit(data["budget"], data["prompt_before"], CompressionSetting(**setting), data["reason"],
                      data["frames_sampled"], data["frames_fit_uncompressed"])


def prefix_to_entry(prefix: PreparedPrefix, *, setup_seconds: float, stage_seconds: dict[str, float]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and JSON of a prepared prefix's entry; None when it cannot be cached
    (language-model arguments that are not tensors or lists of tensors)."""
    prefill = prefix.prefill
    extra = _lm_kwargs_tensors(prefill.lm_kwargs)
    if extra is None:
        return None
    tensors = {
        "prefill.embeds": prefill.embeds, "prefill.attention_mask": prefill.attention_mask,
        "prefill.position_ids": prefill.position_ids, "input_ids": prefix.input_ids, **extra[0],
    }
    if prefill.kept is not None:
        tensors["prefill.kept"] = prefill.kept
    return tensors, {
        "created": time.time(),
        "setup_seconds": setup_seconds,
        "stage_seconds": stage_seconds,
        "templates": dataclasses.asdict(prefix.templates),
        "kind": prefix.kind,
        "config": prefix.config.to_dict() if prefix.config is not None else None,
        "group_rows": prefix.group_rows,
        "summary": prefix.summary.to_dict() if prefix.summary is not None else None,
        "counts": dataclasses.asdict(prefix.counts),
        "tokens": {name: [count.before, count.after] for name, count in
                   (("video", prefix.tokens.video), ("audio", prefix.tokens.audio), ("text", prefix.tokens.text))},
        "planned": dict(prefix.planned),
        "context_fit": _fit_json(prefix.context_fit),
        "lm_kwargs": extra[1],
    }


def prefix_from_entry(cached: CachedPrefix, *, media_path: str | Path | None = None) -> PreparedPrefix:
    """The prepared prefix of an entry read by :meth:`PrefixCache.load` (no keep plan: it is not stored).

    It answers exactly as the prefix that built the entry (same prefill, same prefix ids, same
    templates). ``media_path``: the file it was opened as now (the summary's path).
    """
    from ..compression import OmniZipConfig, PromptCounts
    from ..measure import ModalityCount, TokenCounts
    from ..media import MediaSummary
    from ..models.base import PrefillInputs, PromptTemplates
    from .prefix import PreparedPrefix

    entry, tensors = cached.entry, cached.tensors
    input_ids = tensors["input_ids"].long()
    kept = tensors.get("prefill.kept")
    prefill = PrefillInputs(
        embeds=tensors["prefill.embeds"], attention_mask=tensors["prefill.attention_mask"],
        position_ids=tensors["prefill.position_ids"], kept=kept.bool() if kept is not None else None,
        lm_kwargs=_lm_kwargs_from(tensors, entry["lm_kwargs"]))
    counts = PromptCounts(**entry["counts"])
    summary = entry["summary"]
    if summary is not None:
        summary = dict(summary)
        summary["warnings"] = tuple(summary.get("warnings", ()))
        if media_path is not None:
            summary["path"] = str(media_path)
        summary = MediaSummary(**summary)
    return PreparedPrefix(
        prefill=prefill, input_ids=input_ids, templates=PromptTemplates(**entry["templates"]), kind=entry["kind"],
        config=OmniZipConfig(**entry["config"]) if entry["config"] is not None else None,
        tokens=TokenCounts(**{name: ModalityCount(*pair) for name, pair in entry["tokens"].items()}),
        counts=counts, summary=summary, group_rows=list(entry["group_rows"]),
        context_fit=_fit_from_json(entry["context_fit"]), planned={k: int(v) for k, v in entry["planned"].items()},
    )
