"""Opening a video for questions: the one path every command and library user goes through.

:func:`open_session` (what :meth:`Session.open <omnizip_cli.generation.Session.open>` runs) applies
the whole policy:

1. **The disk cache first** (:mod:`.prefix_cache`; ``OpenOptions(cache=False)`` bypasses it): the
   file is hashed; when the cache holds an entry built from the same bytes (under any setting), the
   model is loaded first so that the full key (model, dtype, device) can be looked up; on a hit
   nothing is decoded.
2. Otherwise the file's **header and video timestamps are checked first** (most bad files fail
   before a multi-GB model load), then the media **decodes on a worker thread while the model
   loads** (when ``model`` is not loaded yet), and the audio track is **encoded as soon as it has
   decoded**, while the video may still be decoding (:mod:`.early_audio`; both only where
   :func:`overlap_enabled`).
3. The processor and both encoders run (:func:`encode_media`), then the keep plan under the
   **prompt budget** (:func:`~.prefix.plan_prefix`), and the prefix is stored in the cache.

**Time to first token** of the session's first answer starts at the start of opening, less the part
of the model load that nothing overlapped (:func:`exclusive_load_seconds`): :attr:`Session.opened_at
<omnizip_cli.generation.Session.opened_at>`. Every command reports that one figure.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..measure import StageTimer
from .prefix import Compression, PrefixOrigin, plan_prefix, records_saliency

if TYPE_CHECKING:
    from ..media import DecodedMedia, MediaOptions
    from ..models.base import EncodedMedia, PreparedPrompt
    from ..models.registry import LoadedModel
    from .early_audio import EarlyAudio
    from .prefix import PreparedPrefix
    from .prefix_cache import PrefixCache
    from .session import Session

#: Media decoding overlaps model work only with at least this many usable cores (see overlap_enabled).
OVERLAP_MIN_CPUS = 4
#: Tokens of the template around a question, added to the longest question's own tokens.
QUESTION_TEMPLATE_TOKENS = 16


def _default_media_options() -> MediaOptions:
    from ..media import MediaOptions

    return MediaOptions()


@dataclass(frozen=True)
class OpenOptions:
    """How to open a video (every field has the CLI's default).

    ``media``: decoding and sampling. ``compression``: a preset name, a
    :class:`~omnizip_cli.compression.CompressionSetting`, an
    :class:`~omnizip_cli.compression.OmniZipConfig`, or None (off). ``system``: the system prompt.

    The prompt budget: ``max_prompt_tokens`` when given; else, when ``max_new_tokens`` is given, the
    model's context minus it, but at least half the context (what ``ask`` does); else no budget
    (only the context warning). The question reserve: ``question_reserve`` when given; else the
    longest of ``questions`` plus the template's tokens; else 0 (``chat``, whose questions are not
    known up front, reserves a fixed number).

    ``decoder``: ``auto``, ``eager`` or ``fast``. ``overlap``: decode beside model work (None: see
    :func:`overlap_enabled`). ``cache``: use the disk cache of prefixes (True: the one under
    ``$OMNIZIP_CACHE``; or a :class:`~.prefix_cache.PrefixCache` of a folder of your own). ``record_saliency``: None
    records the audio saliency only when compressing; True lets :meth:`Session.with_compression`
    compress a session opened uncompressed. ``revision``: the model's hub revision (part of the
    cache key).
    """

    media: MediaOptions = field(default_factory=_default_media_options)
    compression: Compression = "45"
    system: str | None = None
    max_prompt_tokens: int | None = None
    max_new_tokens: int | None = None
    questions: tuple[str, ...] = ()
    question_reserve: int | None = None
    decoder: str = "auto"
    overlap: bool | None = None
    cache: bool | PrefixCache = True
    record_saliency: bool | None = None
    revision: str | None = None

    def prompt_budget(self, loaded: LoadedModel) -> tuple[int | None, int]:
        """``(max_prompt_tokens, question_reserve)`` for this model (see the class docstring)."""
        context = loaded.context_length
        budget = self.max_prompt_tokens
        if budget is None and self.max_new_tokens is not None:
            budget = max(context - self.max_new_tokens, context // 2)
        reserve = self.question_reserve
        if reserve is None:
            if self.questions:
                tokenizer = loaded.processor.tokenizer
                reserve = max(len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in self.questions) \
                    + QUESTION_TEMPLATE_TOKENS
            else:
                reserve = 0
        return budget, reserve


@dataclass
class EncodedVideo:
    """A video encoded once, uncompressed (what ``profile`` and ``evaluate`` plan per setting from).

    ``timer``: the stages that produced it (media decode, preprocess, encoders, saliency).
    """

    loaded: LoadedModel
    prepared: PreparedPrompt
    encoded: EncodedMedia
    media: DecodedMedia | None = None
    timer: StageTimer | None = None

    def prefix(self, compression: Compression, *, timer: StageTimer | None = None,
               max_prompt_tokens: int | None = None, question_reserve: int = 0) -> PreparedPrefix:
        """The prepared prefix of this video under ``compression`` (keep plan and budget rule)."""
        if (records_saliency(compression) and self.encoded.audio_scores is None
                and self.loaded.adapter.token_ids(self.loaded.model).audio in self.encoded.input_ids):
            raise ValueError("this video was encoded without audio saliency: open it with record_saliency=True")
        return plan_prefix(self.loaded, self.prepared, self.encoded, compression,
                           timer=timer or StageTimer(device=self.loaded.device),
                           summary=self.media.summary if self.media is not None else None,
                           max_prompt_tokens=max_prompt_tokens, question_reserve=question_reserve)


def prepare(loaded: LoadedModel, media: DecodedMedia, *, system: str | None = None,
            timer: StageTimer | None = None, question: str | None = None, processor: Any = None) -> PreparedPrompt:
    """The processor on the question-independent prompt prefix (timed as "preprocess").

    ``question`` given: the whole one-turn prompt instead, as the stock path builds it (for
    comparisons against stock ``generate``). ``processor``: instead of the model's own (e.g. one
    replaying the early audio features, :meth:`.early_audio.EarlyAudio.processor`).
    """
    from ..models.device_preprocess import preprocess_device

    timer = timer or StageTimer(device=loaded.device)
    with timer.stage("preprocess"):
        return loaded.adapter.prepare(processor or loaded.processor, media, system, question=question,
                                      device=preprocess_device(loaded.device))


def encode_prepared(loaded: LoadedModel, prepared: PreparedPrompt, *, record_saliency: bool,
                    timer: StageTimer | None = None, media: DecodedMedia | None = None,
                    early_audio: EarlyAudio | None = None) -> EncodedVideo:
    """Both encoders (and the audio saliency when ``record_saliency``) on prepared processor output.

    ``early_audio``: the audio encoded while the video decoded, used when it matches ``prepared``.
    """
    timer = timer or StageTimer(device=loaded.device)
    has_audio = prepared.audio_features is not None
    record = record_saliency and has_audio
    early = early_audio.encoding_for(prepared, record_saliency=record, timer=timer) \
        if early_audio is not None and has_audio else None
    encoded = loaded.adapter.encode(loaded.model, prepared, record_saliency=record, timer=timer, audio=early)
    return EncodedVideo(loaded, prepared, encoded, media=media, timer=timer)


def encode_media(loaded: LoadedModel, media: DecodedMedia, *, record_saliency: bool, system: str | None = None,
                 timer: StageTimer | None = None, early_audio: EarlyAudio | None = None) -> EncodedVideo:
    """The processor and both encoders on decoded media (the early audio's processor call replayed)."""
    timer = timer or StageTimer(device=loaded.device)
    processor = early_audio.processor(loaded.processor) if early_audio is not None else None
    prepared = prepare(loaded, media, system=system, timer=timer, processor=processor)
    return encode_prepared(loaded, prepared, record_saliency=record_saliency, timer=timer, media=media,
                           early_audio=early_audio)


def overlap_enabled(overlap: bool | None = None, cpus: int | None = None) -> bool:
    """Whether media decoding overlaps model work: the audio track encoded while the video decodes
    (:mod:`.early_audio`), and the decoding beside the model load.

    ``overlap`` given: that. Else ``$OMNIZIP_OVERLAP`` (``1``/``0``) when set. Else on with
    :data:`OVERLAP_MIN_CPUS` or more usable cores: on the 2-core development machine the decoding
    and a (tiny, CPU) model load beside it slowed each other (both need the interpreter lock and
    the cores) and the process took as long or longer (``benchmarks/ask_e2e.py``, see the README).
    """
    import os

    if overlap is not None:
        return overlap
    value = os.environ.get("OMNIZIP_OVERLAP", "").strip().lower()
    if value:
        return value not in ("0", "false", "no", "off")
    from ..media.video import usable_cpus

    return (usable_cpus() if cpus is None else cpus) >= OVERLAP_MIN_CPUS


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


# ------------------------------------------------------------------------------ plumbing seams
# Module-level so that the CLI's plumbing tests can replace them (a fake model, media or session).

def load_model(spec: Any) -> LoadedModel:
    """Load a model from a :class:`~omnizip_cli.models.ModelSpec` or a name."""
    from ..models import ModelSpec
    from ..models import load_model as load

    return load(spec if isinstance(spec, ModelSpec) else ModelSpec(model=str(spec)))


def start_media(path: Path, options: MediaOptions, token_pixels: int) -> Callable[..., DecodedMedia]:
    """Check the file now (header, streams, video timestamps: most bad files fail here) and return
    its decoding, ``decode(on_audio=None, cancel=None) -> DecodedMedia``, to run on a worker thread.
    Frame sides are multiples of ``token_pixels`` (the model's ``VisionGeometry.token_pixels``)."""
    from ..media import decode_media, plan_media

    return functools.partial(decode_media, plan_media(path, options, token_pixels=token_pixels))


def fresh_session(loaded: LoadedModel, media: DecodedMedia, options: OpenOptions, *, session_class: type[Session],
                  timer: StageTimer, warn: Callable[[str], None] | None, early_audio: EarlyAudio | None,
                  max_prompt_tokens: int | None, question_reserve: int) -> Session:
    """Processor, encoders, keep plan and budget rule on decoded media: a session with a fresh prefix."""
    video = encode_media(loaded, media, record_saliency=records_saliency(options.compression, options.record_saliency),
                         system=options.system, timer=timer, early_audio=early_audio)
    return session_class.from_video(video, options.compression, timer=timer, decoder=options.decoder, warn=warn,
                                    max_prompt_tokens=max_prompt_tokens, question_reserve=question_reserve)


# ------------------------------------------------------------------------------ the policy
class _Decoding:
    """The media of one path, decoded on a worker thread (or at once without overlap)."""

    def __init__(self, path: Path, options: OpenOptions, early: EarlyAudio | None, overlap: bool) -> None:
        self.path, self.options, self.early, self.overlap = path, options, early, overlap
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnizip-decode")
        self.cancel = threading.Event()  # set when opening fails: the decode stops instead of finishing for nobody
        self.job: Future[DecodedMedia] | None = None
        self.token_pixels: int | None = None  # the model's token size: known before or after its load
        self.start: float | None = None
        self.end: float | None = None
        self.rss: int | None = None

    def begin(self) -> None:
        assert self.token_pixels is not None
        decode = start_media(self.path, self.options.media, self.token_pixels)  # a bad file fails here
        if self.overlap:
            self.job = self.pool.submit(self._run, decode)
        else:
            self.job = Future()
            self.job.set_result(self._run(decode))

    def _run(self, decode: Callable[..., DecodedMedia]) -> DecodedMedia:
        from ..measure import process_peak_rss_bytes

        self.start = time.perf_counter()
        media = decode(on_audio=self.early.submit if self.early is not None else None, cancel=self.cancel)
        self.end = time.perf_counter()
        self.rss = process_peak_rss_bytes()
        return media

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.done()

    def close(self, failed: bool) -> None:
        if failed:
            self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def open_session(
    model: Any,
    source: str | Path | DecodedMedia,
    options: OpenOptions,
    *,
    session_class: type[Session],
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    early_audio: EarlyAudio | None = None,
) -> Session:
    """Open ``source`` for questions with the whole policy (see the module docstring); what
    :meth:`Session.open <omnizip_cli.generation.Session.open>` runs (``session_class``: the class it
    builds, so that this module does not import the session's).

    ``model``: a loaded model, or a :class:`~omnizip_cli.models.ModelSpec` or name to load (beside
    the decoding). ``progress``: messages while it works; ``warn``: warnings (the model's, the
    media's, the budget's; each once); ``on_stage``: each timed stage's name as it starts.
    ``early_audio``: audio work the caller already started (else one is made where it pays).
    """
    from ..models import ModelSpec
    from ..terminal import escape_control
    from .early_audio import EarlyAudio

    started = time.perf_counter()
    say = progress or (lambda _message: None)
    warned: list[str] = []

    def note(message: str) -> None:
        if warn is not None and message not in warned:
            warned.append(message)
            warn(message)

    is_path = isinstance(source, (str, Path))
    path = Path(source) if is_path else None
    hash_started = time.perf_counter()
    cache, content = _consult_cache(path, options, say) if path is not None else (None, None)
    hash_seconds = time.perf_counter() - hash_started if content is not None else None
    overlap = overlap_enabled(options.overlap)
    own_early = None
    if early_audio is None and path is not None and overlap:
        early_audio = own_early = EarlyAudio(record_saliency=records_saliency(options.compression,
                                                                              options.record_saliency))
    decoding = _Decoding(path, options, early_audio, overlap) if path is not None else None
    needs_load = isinstance(model, (str, ModelSpec))
    failed = True
    try:
        if decoding is not None:
            decoding.token_pixels = _token_pixels(model) if needs_load else \
                model.adapter.vision_geometry(model.model).token_pixels
        if decoding is not None and (cache is None or content is None or not cache.has_content(content)):
            say(f"decoding {escape_control(str(path))} ...")
            decoding.begin()  # before the model load: a bad file fails first, and decoding overlaps the load
        load_started = time.perf_counter()
        if needs_load:
            name = getattr(model, "model", model)
            say(f"loading {name} while decoding {escape_control(str(path))} ..."
                if decoding is not None and decoding.running else f"loading {name} ...")
            loaded = load_model(model)
        else:
            loaded = model
        load_ended = time.perf_counter()
        if early_audio is not None:
            early_audio.attach(loaded)
        if decoding is not None:  # the loaded model's own geometry decides (released checkpoints: the same)
            own = loaded.adapter.vision_geometry(loaded.model).token_pixels
            if decoding.job is not None and own != decoding.token_pixels:  # a checkpoint of its own geometry
                decoding.close(failed=True)
                decoding = _Decoding(path, options, early_audio, overlap)  # type: ignore[arg-type]
            decoding.token_pixels = own
        timer = StageTimer(device=loaded.device, on_stage=on_stage)
        if hash_seconds is not None:
            timer.add("content_hash", hash_seconds)
        if needs_load:
            timer.add("load_model", loaded.load_seconds)
            timer.record_memory("load_model")
            for message in loaded.warnings:
                note(message)
        if options.max_new_tokens is not None and options.max_new_tokens >= loaded.context_length:
            from ..errors import UsageError

            raise UsageError(f"--max-new-tokens {options.max_new_tokens} is not below the model's context of "
                             f"{loaded.context_length} tokens (the prompt needs room too)")
        budget, reserve = options.prompt_budget(loaded)

        def media() -> DecodedMedia:
            if decoding is None:
                return source  # type: ignore[return-value]  # already decoded
            if decoding.job is None:
                say(f"decoding {escape_control(str(path))} ...")
                decoding.begin()
            elif decoding.running:
                say(f"decoding {escape_control(str(path))} ...")
            decoded = decoding.job.result()  # type: ignore[union-attr]
            if "media_decode" not in timer.stages:
                from ..measure import CPU_RSS

                # Media decoding runs on the CPU (beside the model load): no GPU memory to report for it.
                timer.add("media_decode", decoded.summary.decode_seconds,
                          peak_memory_bytes=None if timer.cuda else decoding.rss, memory_kind=CPU_RSS)
                for message in decoded.summary.warnings:
                    note(message)
            return decoded

        if decoding is not None and decoding.job is not None:
            media()
        session, unusable = None, False
        key = _cache_key(content, loaded, options) if cache is not None and content is not None else None
        if key is not None:
            say("reading the prefix cache ...")
            session, unusable = _from_cache(cache, key, loaded, path, options, budget, reserve, timer, note,
                                            session_class)
        if session is None:
            session = fresh_session(loaded, media(), options, session_class=session_class, timer=timer, warn=note,
                                    early_audio=early_audio, max_prompt_tokens=budget, question_reserve=reserve)
            if key is not None:
                _store(cache, key, session, note, replace=unusable)
        failed = False
    finally:
        if decoding is not None:
            decoding.close(failed)
        if own_early is not None:
            own_early.close()
    fit = session.context_fit
    if fit is not None and fit.reason:
        note(fit.reason)
    load_excluded = exclusive_load_seconds(load_started, load_ended, decoding.start if decoding else None,
                                           decoding.end if decoding else None)
    session.opened_at = started + load_excluded
    session.max_prompt_tokens = budget
    return session


def _token_pixels(model: Any) -> int:
    """The model's token size before it is loaded; where it cannot be known yet (a hub model not
    downloaded), the media layer's default (Qwen2.5-Omni's 28), decoded again after the load when
    the model's own differs."""
    from ..media.datatypes import IMAGE_FACTOR
    from ..models.registry import token_pixels_before_loading

    known = token_pixels_before_loading(str(getattr(model, "model", model)), getattr(model, "revision", None))
    return known if known is not None else IMAGE_FACTOR


def _consult_cache(path: Path, options: OpenOptions, say: Callable[[str], None]) -> tuple[Any, str | None]:
    """The prefix cache and the file's content hash, or (None, None) when the cache is not used."""
    if not options.cache:
        return None, None
    from ..terminal import escape_control
    from .prefix_cache import PrefixCache, content_hash

    cache = options.cache if isinstance(options.cache, PrefixCache) else PrefixCache()
    if not cache.enabled:
        return None, None
    from ..media.container import check_path

    check_path(path)  # a missing, unreadable or indirect file (a playlist) fails here, before any hashing
    say(f"hashing {escape_control(str(path))} ...")
    return cache, content_hash(path)


def _cache_key(content: str, loaded: LoadedModel, options: OpenOptions) -> Any:
    """The prefix cache's key of this file under this model and these options."""
    from .prefix_cache import make_key

    return make_key(content, loaded, media_options=options.media, compression=options.compression,
                    system=options.system, revision=options.revision)


def _from_cache(cache: Any, key: Any, loaded: LoadedModel, path: Path | None, options: OpenOptions,
                budget: int | None, reserve: int, timer: StageTimer, note: Callable[[str], None],
                session_class: type[Session]) -> tuple[Session | None, bool]:
    """A session on the cached prefix when a valid entry exists (None: a miss), and whether an entry
    was found but is unusable for this request (a fresh build then replaces it)."""
    from .prefix import refit_cached
    from .prefix_cache import prefix_from_entry

    cached = cache.load(key, loaded.device)
    if cached is None:
        return None, False
    prefix = prefix_from_entry(cached, media_path=path)
    fit = refit_cached(prefix, options.compression, max_prompt_tokens=budget, question_reserve=reserve)
    if fit is False:
        return None, True
    prefix.context_fit = fit  # type: ignore[assignment]
    if prefix.summary is not None:
        for message in prefix.summary.warnings:  # the decode warnings, as the entry recorded them
            note(message)
    origin = PrefixOrigin(source="disk", cached=True, path=str(cached.folder), entry_bytes=cached.size_bytes,
                          load_seconds=cached.load_seconds, saved_seconds=float(cached.entry["setup_seconds"]),
                          stage_seconds=dict(cached.entry.get("stage_seconds", {})))
    return session_class(loaded, prefix, timer=timer, decoder=options.decoder, warn=note, origin=origin), False


def _store(cache: Any, key: Any, session: Session, note: Callable[[str], None], *, replace: bool) -> None:
    """Write the fresh session's prefix to the cache (a failure is a warning, never an error)."""
    from .prefix_cache import SETUP_STAGES, prefix_to_entry

    timer = session.timer
    stages = {name: timer.seconds(name) for name in SETUP_STAGES if name in timer.stages}
    waited = sum(seconds for name, seconds in stages.items() if not timer.stages[name].overlapped)
    built = prefix_to_entry(session.prefix, setup_seconds=waited, stage_seconds=stages)
    stored, why = None, "not cacheable"
    if built is not None:
        try:
            stored = cache.store(key, *built, replace=replace)
            why = "larger than OMNIZIP_CACHE_MAX_BYTES"
        except Exception as exc:  # noqa: BLE001 - a full disk (OSError, SafetensorError...) must not fail the question
            lines = str(exc).strip().splitlines()
            reason = getattr(exc, "strerror", None) or (lines[0] if lines else type(exc).__name__)
            why = f"write failed: {reason}"
            note(f"the prefix cache could not be written ({reason}): {cache.root}")
    session.origin = PrefixOrigin(source="fresh", cached=True, path=str(stored) if stored is not None else None,
                                  stored=stored is not None, not_stored=None if stored is not None else why)
