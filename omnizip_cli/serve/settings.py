"""The server's configuration: what ``omnizip serve``'s options set, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..media import MediaOptions

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MiB = 1024 * 1024
GiB = 1024 * MiB


def _default_media() -> MediaOptions:
    from ..media import MediaOptions

    return MediaOptions()


def _default_compression() -> CompressionSetting:
    from ..compression import CompressionSetting

    return CompressionSetting()


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs.

    Request defaults: ``media`` (a request's ``mm_processor_kwargs`` override ``fps``, ``max_pixels``,
    ``max_frames``, ``min_pixels`` and audio-in-video), ``compression`` (a request's ``omnizip``
    object overrides it), ``system``, ``max_tokens`` (when a request gives none), ``decoder``.

    Limits: ``max_queue`` requests waiting beyond the one running (more get a 429 with
    ``Retry-After``); ``request_timeout`` seconds from arrival to the last token (an error after
    that); ``max_prefix_memory`` bytes of prefixes held in memory (least recently used first out;
    their entries stay in the disk cache); ``max_media_bytes`` for an uploaded, downloaded or
    base64 file; ``max_request_bytes`` for a request body; ``download_timeout`` seconds for a remote
    file; ``shutdown_grace`` seconds that SIGTERM leaves in-flight answers.

    Security: ``api_key`` (None: no key); ``allowed_media_paths`` (local files only under these,
    after resolving symlinks); ``allow_remote_media`` (http(s) URLs); ``media_folder`` (uploads,
    ``data:`` URLs and downloads, content-addressed; always allowed).
    """

    model_name: str = "Qwen/Qwen2.5-Omni-7B"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    media: MediaOptions = field(default_factory=_default_media)
    compression: Any = field(default_factory=_default_compression)
    system: str | None = None
    max_tokens: int = 256
    decoder: str = "auto"
    use_disk_cache: Any = True  # True, False, or a PrefixCache of a folder of your own (as OpenOptions.cache)
    max_queue: int = 16
    request_timeout: float = 600.0
    max_prefix_memory: int = 4 * GiB
    max_media_bytes: int = 512 * MiB
    max_request_bytes: int | None = None
    download_timeout: float = 60.0
    shutdown_grace: float = 30.0
    api_key: str | None = None
    allowed_media_paths: tuple[Path, ...] = ()
    allow_remote_media: bool = False
    media_folder: Path | None = None

    @property
    def request_byte_limit(self) -> int:
        """A body may carry one base64 file of ``max_media_bytes`` (4/3 larger) and some text."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return self.max_media_bytes * 4 // 3 + 4 * MiB

    def media_root(self) -> Path:
        """Where uploads, ``data:`` URLs and downloads are kept (``$OMNIZIP_CACHE/serve-media`` by default)."""
        if self.media_folder is not None:
            return self.media_folder
        from ..models.tiny import default_cache_dir

        return default_cache_dir() / "serve-media"
