"""Opening a video's session for ``ask`` and ``chat``: the disk cache first, then decode and encode.

Without a cache entry for the file, the file's header and video timestamps are checked before the
model is loaded (most bad files fail before a multi-GB model load), then the media decodes on a
worker thread **while the model loads**; once the model is there, the audio track is encoded as soon
as it has decoded, while the video may still be decoding (:mod:`omnizip_cli.generation.early_audio`).
A file that passes the header checks but cannot be decoded fails once the model is loaded. With a
cache entry (same file content, any setting), the model is loaded first, so that the full key
(model, dtype, device) can be looked up; on a hit nothing is decoded. The report's
``prefix_cache`` says which happened.

Time to first token excludes the model load, but only the part of it that nothing else overlapped:
:attr:`Opened.load_excluded` (see :func:`exclusive_load_seconds`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..terminal import escape_control


@dataclass
class Opened:
    """A session ready for questions: ``started`` is when the work began (before media decode),
    ``load_wall`` the wall seconds of the model load, ``load_excluded`` the part of them excluded
    from time to first token (the load that media decoding did not overlap)."""

    session: Any
    loaded: Any
    started: float
    load_wall: float
    load_excluded: float


def exclusive_load_seconds(load_start: float, load_end: float, decode_start: float | None,
                           decode_end: float | None) -> float:
    """Seconds of the model load ``[load_start, load_end]`` that media decoding did not overlap.

    Decoding beside the load kept the way to the first token busy anyway; only the rest of the load
    is waiting that an already loaded model would not have had. None: nothing was decoded.
    """
    whole = load_end - load_start
    if decode_start is None or decode_end is None:
        return whole
    overlap = max(0.0, min(load_end, decode_end) - max(load_start, decode_start))
    return whole - overlap


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
    start_media: Callable[[Path, Any], Callable[..., Any]],
    load_model: Callable[[Any], Any],
    open_session: Callable[..., Any],
) -> Opened:
    """Decode (unless cached) while the model loads, open the session (from the disk cache when it can).

    ``budget_for(loaded)`` gives ``(max_prompt_tokens, question_reserve)``; ``start_media(path,
    options)`` checks the file and returns ``decode(on_audio=None, cancel=None) -> DecodedMedia``
    (:func:`omnizip_cli.media.decode_media`); ``load_model``
    and ``open_session`` are the command's (tests replace all three).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from ..generation.early_audio import EarlyAudio
    from ..generation.session import overlap_enabled, records_saliency
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
    overlap = overlap_enabled()
    early = EarlyAudio(record_saliency=records_saliency(compression, None)) if overlap else None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnizip-decode")

    cancel = threading.Event()  # set when opening fails: the decode stops instead of finishing for nobody

    def decode_job(decode: Callable[..., Any]) -> Any:
        decoded["start"] = time.perf_counter()
        media = decode(on_audio=early.submit if early is not None else None, cancel=cancel)
        decoded["end"] = time.perf_counter()
        decoded["rss"] = process_peak_rss_bytes()
        return media

    def start_decode() -> None:
        spinner.update(f"decoding {escape_control(str(video))} ...")
        decode = start_media(video, media_options)  # the header checks: a bad file fails here
        if overlap:
            decoded["job"] = pool.submit(decode_job, decode)
        else:  # $OMNIZIP_OVERLAP=0: decode now, before the model load
            decoded["job"] = Future()
            decoded["job"].set_result(decode_job(decode))

    try:
        if cache is None or content is None or not cache.has_content(content):
            start_decode()  # before the model load: a bad file fails first, and decoding overlaps the load
        decoding = "job" in decoded and not decoded["job"].done()
        spinner.update(f"loading {model.model} while decoding {escape_control(str(video))} ..." if decoding
                       else f"loading {model.model} ...")
        load_started = time.perf_counter()
        loaded = load_model(model)
        load_ended = time.perf_counter()
        if early is not None:
            early.attach(loaded)
        timer = StageTimer(device=loaded.device, on_stage=spinner.stage)
        timer.add("load_model", loaded.load_seconds)
        timer.record_memory("load_model")
        for message in loaded.warnings:
            warn(message)

        def record_media() -> Any:
            if "job" in decoded and "media" not in decoded:
                spinner.update(f"decoding {escape_control(str(video))} ...")
                decoded["media"] = decoded["job"].result()
            media = decoded["media"]
            # Media decoding runs on the CPU (beside the model load): no GPU memory to report for it.
            timer.add("media_decode", media.summary.decode_seconds,
                      peak_memory_bytes=None if timer.cuda else decoded["rss"], memory_kind=CPU_RSS)
            for message in media.summary.warnings:
                warn(message)
            return media

        if "job" in decoded:
            record_media()
        budget, reserve = budget_for(loaded)

        def fresh() -> Any:
            if "job" not in decoded:
                start_decode()
                record_media()
            return open_session(loaded, decoded["media"], compression=compression, system=system, timer=timer,
                                warn=warn, max_prompt_tokens=budget, question_reserve=reserve, early_audio=early)

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
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if early is not None:
            early.close()
    fit = getattr(session, "context_fit", None)
    if fit is not None and fit.reason:
        warn(fit.reason)
    load_wall = load_ended - load_started
    return Opened(session=session, loaded=loaded, started=started, load_wall=load_wall,
                  load_excluded=exclusive_load_seconds(load_started, load_ended, decoded.get("start"), decoded.get("end")))
