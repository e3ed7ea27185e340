"""Opening a video's session for ``ask`` and ``chat``: the disk cache first, then decode and encode.

Without a cache entry for the file, the media is decoded before the model is loaded (a bad file
fails before a multi-GB model load). With one (same file content, any setting), the model is
loaded first, so that the full key (model, dtype, device) can be looked up; on a hit nothing is
decoded. The report's ``prefix_cache`` says which happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..terminal import escape_control


@dataclass
class Opened:
    """A session ready for questions: ``started`` is when the work began (before media decode),
    ``load_wall`` the wall seconds of the model load (excluded from time to first token)."""

    session: Any
    loaded: Any
    started: float
    load_wall: float


def open_video(
    video: Path,
    *,
    model: Any,
    media_options: Any,
    compression: Any,
    system: str | None,
    warn: Callable[[str], None],
    spinner: Any,
    budget_for: Callable[[Any], tuple[int, int]],
    use_cache: bool,
    load_media: Callable[[Path, Any], Any],
    load_model: Callable[[Any], Any],
    open_session: Callable[..., Any],
) -> Opened:
    """Decode (unless cached), load the model, open the session (from the disk cache when it can).

    ``budget_for(loaded)`` gives ``(max_prompt_tokens, question_reserve)``; ``load_media``,
    ``load_model`` and ``open_session`` are the command's (tests replace them).
    """
    from ..measure import CPU_RSS, StageTimer, process_peak_rss_bytes

    cache = None
    content = None
    started = time.perf_counter()
    if use_cache:
        from ..generation.prefix_cache import PrefixCache, content_hash

        cache = PrefixCache()
        if not cache.enabled:
            cache = None
        elif video.is_file():
            spinner.update(f"hashing {escape_control(str(video))} ...")
            content = content_hash(video)
    decoded: dict[str, Any] = {}

    def decode() -> Any:
        spinner.update(f"decoding {escape_control(str(video))} ...")
        decoded["media"] = load_media(video, media_options)
        decoded["rss"] = process_peak_rss_bytes()
        return decoded["media"]

    if cache is None or content is None or not cache.has_content(content):
        decode()  # media first: a bad file should fail before a multi-GB model load
    spinner.update(f"loading {model.model} ...")
    load_started = time.perf_counter()
    loaded = load_model(model)
    load_wall = time.perf_counter() - load_started
    timer = StageTimer(device=loaded.device, on_stage=spinner.stage)
    timer.add("load_model", loaded.load_seconds)
    timer.record_memory("load_model")
    for message in loaded.warnings:
        warn(message)

    def record_media() -> Any:
        media = decoded["media"]
        # Media decoding runs on the CPU before the model exists: no GPU memory to report for it.
        timer.add("media_decode", media.summary.decode_seconds,
                  peak_memory_bytes=None if timer.cuda else decoded["rss"], memory_kind=CPU_RSS)
        for message in media.summary.warnings:
            warn(message)
        return media

    if "media" in decoded:
        record_media()
    budget, reserve = budget_for(loaded)

    def fresh() -> Any:
        if "media" not in decoded:
            decode()
            record_media()
        return open_session(loaded, decoded["media"], compression=compression, system=system, timer=timer,
                            warn=warn, max_prompt_tokens=budget, question_reserve=reserve)

    if cache is None:
        session = fresh()
    else:
        from ..generation.prefix_cache import open_with_cache

        spinner.update("reading the prefix cache ...")
        session = open_with_cache(loaded, video, cache=cache, open_fresh=fresh, media_options=media_options,
                                  compression=compression, system=system, max_prompt_tokens=budget,
                                  question_reserve=reserve, revision=getattr(model, "revision", None),
                                  content=content, timer=timer, warn=warn)
        if "media" not in decoded and session.summary is not None:
            for message in session.summary.warnings:  # the decode warnings, as the entry recorded them
                warn(message)
    fit = getattr(session, "context_fit", None)
    if fit is not None and fit.reason:
        warn(fit.reason)
    return Opened(session=session, loaded=loaded, started=started, load_wall=load_wall)
