"""A request's media part resolved to a local file the server may read.

- ``file://`` URLs and plain paths: only under the ``--allowed-media-path`` roots (or the server's
  media folder), checked after resolving ``..`` and symlinks, so no link can point outside them.
- ``data:<type>;base64,...`` URLs and ``input_audio``: decoded (at most ``max_media_bytes``) into
  the media folder, named by their SHA-256 (the same bytes are stored once).
- ``http(s)://`` URLs: refused unless ``--allow-remote-media``; downloaded with a size cap and a
  timeout into the media folder, content-addressed as well.
- Uploads (``POST /v1/uploads``, what the web page uses) land in the same folder.

Every failure is an :class:`~.errors.ApiError` with one line and the right status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from .request import MediaPart
    from .settings import ServeSettings

DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<base64>;base64)?,",
                      re.IGNORECASE)
#: input_audio formats -> file suffix.
AUDIO_FORMATS = {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "opus": ".opus", "m4a": ".m4a",
                 "aac": ".aac", "webm": ".webm"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalMedia:
    """A file the server may read; ``sha256`` when the server wrote it (content-addressed)."""

    path: Path
    sha256: str | None = None


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} is larger than the server's limit of {limit} bytes (--max-media-mb)",
                    code="media_too_large")


class ContentWriter:
    """Writes bytes into ``folder`` under a temporary name, hashing them and enforcing ``limit``;
    :meth:`finish` renames the file to ``<sha256><suffix>`` (atomic; an existing copy is kept). As a
    context manager, a failure inside the block removes the partial file."""

    def __init__(self, folder: Path, limit: int, what: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.limit, self.what = folder, limit, what
        self.temporary = folder / f".partial-{uuid.uuid4().hex}"
        self.file: BinaryIO = open(self.temporary, "wb")  # noqa: SIM115 - closed in finish/abort
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.abort()
            raise _too_large(self.what, self.limit)
        self.hash.update(data)
        self.file.write(data)

    def finish(self, suffix: str) -> LocalMedia:
        self.file.close()
        digest = self.hash.hexdigest()
        final = self.folder / f"{digest}{suffix}"
        if final.exists():
            self.temporary.unlink(missing_ok=True)
        else:
            os.replace(self.temporary, final)
        return LocalMedia(final, digest)

    def __enter__(self) -> ContentWriter:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.temporary.unlink(missing_ok=True)


def safe_suffix(name: str | None, mime: str | None = None) -> str:
    """A short alphanumeric file suffix from a file name or a MIME type ('' when neither says)."""
    suffix = Path(name).suffix.lower() if name else ""
    if not suffix and mime:
        suffix = mimetypes.guess_extension(mime.split(";")[0].strip().lower()) or ""
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def store_bytes(chunks: Iterable[bytes], settings: ServeSettings, *, suffix: str, what: str) -> LocalMedia:
    with ContentWriter(settings.media_root(), settings.max_media_bytes, what) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.finish(suffix)


def _decode_base64(payload: str, settings: ServeSettings, param: str, suffix: str) -> LocalMedia:
    limit = settings.max_media_bytes
    if len(payload) // 4 * 3 > limit + 2:
        raise _too_large(f"{param}: the base64 data", limit)
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{param}: the data is not valid base64", param, "invalid_base64") from None
    if not data:
        raise bad_request(f"{param}: the data is empty", param, "invalid_base64")
    return store_bytes([data], settings, suffix=suffix, what=f"{param}: the decoded data")


def _data_url(url: str, param: str, settings: ServeSettings) -> LocalMedia:
    match = DATA_URL.match(url)
    if match is None or not match.group("base64"):
        raise bad_request(f"{param}: a data: URL must be data:<type>;base64,<data>", param, "invalid_data_url")
    mime = (match.group("type") or "application/octet-stream").lower()
    if not mime.startswith(("video/", "audio/", "application/octet-stream")):
        raise bad_request(f"{param}: a data: URL of type {mime} is not a video or audio file", param,
                          "invalid_data_url")
    return _decode_base64(url[match.end():], settings, param, safe_suffix(None, mime))


def _roots(settings: ServeSettings) -> list[Path]:
    return [root.resolve() for root in (*settings.allowed_media_paths, settings.media_root())]


def _local(raw: str, param: str, settings: ServeSettings) -> LocalMedia:
    if "\x00" in raw:
        raise bad_request(f"{param}: the path holds a NUL character", param)
    path = Path(raw)
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in _roots(settings)):
        hint = ("start the server with --allowed-media-path FOLDER" if not settings.allowed_media_paths
                else "allowed: " + ", ".join(str(p) for p in settings.allowed_media_paths))
        raise ApiError(403, f"{param}: {raw} is outside the allowed media folders ({hint})", param=param,
                       code="path_not_allowed")
    if not resolved.is_file():
        raise bad_request(f"{param}: no such file: {raw}", param, "file_not_found")
    return LocalMedia(resolved)


def _file_url(url: str, param: str, settings: ServeSettings) -> LocalMedia:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"{param}: file:// URLs name local files only (host {parsed.netloc!r})", param)
    return _local(urllib.parse.unquote(parsed.path), param, settings)


def download(url: str, param: str, settings: ServeSettings) -> LocalMedia:
    """``url`` fetched into the media folder (size cap, timeout); a 400/413 on failure."""
    import urllib.error
    import urllib.request

    suffix = safe_suffix(urllib.parse.urlparse(url).path)
    try:
        with urllib.request.urlopen(url, timeout=settings.download_timeout) as response:  # noqa: S310 - http(s) only
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > settings.max_media_bytes:
                raise _too_large(f"{param}: {url}", settings.max_media_bytes)
            suffix = suffix or safe_suffix(None, response.headers.get("Content-Type"))
            return store_bytes(iter(lambda: response.read(CHUNK), b""), settings, suffix=suffix,
                               what=f"{param}: {url}")
    except ApiError:
        raise
    except urllib.error.HTTPError as exc:
        raise bad_request(f"{param}: downloading {url} failed: HTTP {exc.code}", param, "download_failed") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise bad_request(f"{param}: downloading {url} failed: {reason}", param, "download_failed") from None


def resolve_media(part: MediaPart, settings: ServeSettings) -> LocalMedia:
    """The local file for a request's media part (see the module docstring)."""
    if part.kind == "input_audio":
        fmt = (part.format or "wav").lower()
        if fmt not in AUDIO_FORMATS:
            raise bad_request(f"{part.param}.format {part.format!r} is not one of {', '.join(AUDIO_FORMATS)}",
                              f"{part.param}.format")
        return _decode_base64(part.data or "", settings, part.param, AUDIO_FORMATS[fmt])
    url = part.url or ""
    scheme = urllib.parse.urlparse(url).scheme.lower() if re.match(r"^[a-zA-Z][\w+.-]*:", url) else ""
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme == "data":
        return _data_url(url, part.param, settings)
    if scheme == "file":
        return _file_url(url, part.param, settings)
    if scheme in ("http", "https"):
        if not settings.allow_remote_media:
            raise ApiError(403, f"{part.param}: remote media URLs are refused by this server (start it with "
                                "--allow-remote-media)", param=part.param, code="remote_media_disabled")
        return download(url, part.param, settings)
    if scheme:
        raise bad_request(f"{part.param}: unsupported URL scheme {scheme!r} (file, data, http or https)",
                          part.param, "unsupported_url")
    return _local(url, part.param, settings)
