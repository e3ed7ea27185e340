"""A video decoded, encoded and compressed once, ready for questions.

:class:`Session` is the trunk every command runs on::

    >>> from omnizip_cli import GenerationOptions, Session, load_model
    >>> model = load_model("tiny")
    >>> session = Session.open(model, "samples/talking.mp4")   # the disk cache first, as the CLI
    >>> first = session.answer("What is said?", GenerationOptions(max_new_tokens=4))
    >>> second = session.answer("Who speaks?", GenerationOptions(max_new_tokens=4))
    >>> second.prefix_source                      # the media prefix was prefilled once
    'memory'
    >>> chat = session.conversation()             # follow-up questions continue a conversation
    >>> chat.answer("What is said?").text, chat.answer("And then?").text  # doctest: +SKIP

Opening (:meth:`Session.open`, :mod:`.opening`): the disk cache first, else media decoding, the
processor on the question-independent prompt prefix (system prompt, user-turn header, the media
tokens), both encoders, the audio saliency and the keep plan. The result is a
:class:`~.prefix.PreparedPrefix` (a plain value; :attr:`Session.origin` says where it came from).

Per question (:meth:`Session.ask`): the question's own tokens are prefilled onto the cached prefix at
their true positions (:class:`~.kv.PrefixKV`), the answer is decoded (:func:`.stream_generate`),
and the cache keeps what it can for the next question. A :class:`~.conversation.Conversation` holds
completed turns; ``Session.ask`` always answers from the media prefix alone. The plan never depends
on the question.

A Session answers one question at a time: an answer started while another one is streaming on the
same thread raises :class:`SessionBusy`; on other threads it waits for the first to finish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import OmnizipError
from ..measure import StageTimer
from .kv import PrefixKV
from .prefix import Compression, PrefixOrigin
from .sampling import GenerationOptions
from .stream import AnswerStats, GenerationChunk, Prefilled, collect, resolve_decoder, stream_generate

if TYPE_CHECKING:
    from ..compression import ContextFit, KeepPlan, OmniZipConfig
    from ..measure import TokenCounts
    from ..media import DecodedMedia, MediaSummary
    from ..models.base import EncodedMedia, PrefillInputs, PreparedPrompt
    from ..models.registry import LoadedModel
    from .conversation import Conversation
    from .opening import EncodedVideo, OpenOptions
    from .prefix import PreparedPrefix


class SessionBusy(OmnizipError):
    """A second answer was started on a Session while one is still streaming on the same thread."""


class PromptTooLong(OmnizipError):
    """A question (or a conversation with its next question) does not fit the prompt budget or the
    model's context; nothing was computed and the session is unchanged."""


class Session:
    """One video (or audio file) ready for questions. See the module docstring.

    ``loaded``: the model; ``prefix``: the prepared prefix (a value); ``video``: the encoded,
    uncompressed media it was planned from (None when read from the disk cache); ``timer``: the
    opening's stages; ``origin``: where the prefix came from; ``opened_at``: where the first
    answer's time to first token starts (None: at that answer).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prefix: PreparedPrefix,
        *,
        video: EncodedVideo | None = None,
        timer: StageTimer | None = None,
        decoder: str = "auto",
        warn: Callable[[str], None] | None = None,
        origin: PrefixOrigin | None = None,
        opened_at: float | None = None,
    ) -> None:
        self.loaded = loaded
        self.prefix = prefix
        self.video = video
        self.timer = timer or StageTimer(device=loaded.device)
        self.origin = origin or PrefixOrigin()
        self.opened_at = opened_at
        self.max_prompt_tokens: int | None = None  # the budget it was opened with (set by the opening)
        self.warnings: list[str] = []
        self._warn = warn
        self.text = loaded.adapter.text_model(loaded.model)
        wanted = decoder if loaded.fast_decoder or decoder != "auto" else "eager"
        self.decoder, self.decoder_note = resolve_decoder(wanted, loaded.device, loaded.attn_implementation)
        self.kv = PrefixKV(self.text, prefix.prefill)
        self._answers = 0
        self._lock = threading.Lock()
        self._owner: int | None = None

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        model: Any,
        source: str | Path | DecodedMedia,
        options: OpenOptions | None = None,
        *,
        progress: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        early_audio: Any = None,
        **fields: Any,
    ) -> Session:
        """Open ``source`` (a path, or media already decoded) for questions: :func:`.opening.open_session`.

        ``options``: an :class:`~.opening.OpenOptions`; or its fields as keywords
        (``Session.open(model, "clip.mp4", compression=None, decoder="eager")``). ``model``: a loaded
        model, or a :class:`~omnizip_cli.models.ModelSpec` / model name, loaded while the file decodes.
        ``progress``: messages while it works; ``warn``: warnings (each once); ``on_stage``: each timed
        stage's name as it starts; ``early_audio``: audio work already started by the caller.
        """
        from .opening import OpenOptions, open_session

        if options is None:
            options = OpenOptions(**fields)
        elif fields:
            raise TypeError("give either an OpenOptions or its fields as keywords, not both")
        return open_session(model, source, options, session_class=cls, progress=progress, warn=warn,
                            on_stage=on_stage, early_audio=early_audio)

    @classmethod
    def from_video(cls, video: EncodedVideo, compression: Compression, *, timer: StageTimer | None = None,
                   decoder: str = "auto", warn: Callable[[str], None] | None = None,
                   max_prompt_tokens: int | None = None, question_reserve: int = 0) -> Session:
        """A session on encoded media under ``compression`` (keep plan and budget rule; no decode, no
        encode): what ``profile`` and ``evaluate`` build per setting."""
        timer = timer or StageTimer(device=video.loaded.device)
        prefix = video.prefix(compression, timer=timer, max_prompt_tokens=max_prompt_tokens,
                              question_reserve=question_reserve)
        return cls(video.loaded, prefix, video=video, timer=timer, decoder=decoder, warn=warn)

    def with_compression(self, compression: Compression) -> Session:
        """A session on the same encoded media with another compression setting (no decode, no encode)."""
        if self.video is None:
            raise OmnizipError("a session reopened from the prefix cache cannot change its compression",
                               hint="open the video again with cache=False (--no-cache)")
        return Session.from_video(self.video, compression, decoder=self.decoder, warn=self._warn)

    # ------------------------------------------------------------------------------ facts
    @property
    def prefill(self) -> PrefillInputs:
        return self.prefix.prefill

    @property
    def tokens(self) -> TokenCounts:
        return self.prefix.tokens

    @property
    def config(self) -> OmniZipConfig | None:
        return self.prefix.config

    @property
    def plan(self) -> KeepPlan | None:
        return self.prefix.plan

    @property
    def context_fit(self) -> ContextFit | None:
        return self.prefix.context_fit

    @property
    def summary(self) -> MediaSummary | None:
        return self.prefix.summary

    @property
    def group_rows(self) -> list[dict[str, Any]]:
        """Per time group figures of the plan (empty when uncompressed)."""
        return list(self.prefix.group_rows)

    @property
    def prefix_length(self) -> int:
        """Tokens of the media prefix before compression."""
        return self.prefix.length

    @property
    def prefix_cache(self) -> dict[str, Any] | None:
        """The report's view of :attr:`origin` (None when the disk cache was not used)."""
        return self.origin.to_dict()

    @property
    def media(self) -> DecodedMedia | None:
        return self.video.media if self.video is not None else None

    @property
    def prepared(self) -> PreparedPrompt | None:
        return self.video.prepared if self.video is not None else None

    @property
    def encoded(self) -> EncodedMedia | None:
        return self.video.encoded if self.video is not None else None

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    # ------------------------------------------------------------------------------ questions
    def question_ids(self, question: str, after: list[int] | None = None) -> list[int]:
        """The ids a question adds after the prefix, or after a conversation's turns ``after``."""
        templates = self.prefix.templates
        tokenizer = self.loaded.processor.tokenizer
        text = question + templates.question_suffix
        if after:
            between = templates.next_turn
            spoken = tokenizer.decode([after[-1]], skip_special_tokens=False)
            if spoken and between.startswith(spoken):  # the answer already closed its turn
                between = between[len(spoken):]
            text = between + text
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def end_of_turn_ids(self) -> list[int]:
        """The ids that close an answer cut short by ``max_new_tokens`` (the template's end-of-turn token)."""
        ids = self.loaded.processor.tokenizer(self.prefix.templates.next_turn, add_special_tokens=False)["input_ids"]
        return list(ids[:1])

    def conversation(self) -> Conversation:
        """A new conversation on this video's prefix (its questions follow up on each other)."""
        from .conversation import Conversation

        return Conversation(self)

    def ask(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None
            ) -> Iterator[GenerationChunk]:
        """Stream the answer to ``question``, from the media prefix alone; the last chunk carries
        :class:`AnswerStats`. ``origin``: where its time to first token starts (default: the
        opening's origin for a session's first answer, else now)."""
        return self.answer_turn(self.question_ids(question), options, origin=origin)

    def answer(self, question: str, options: GenerationOptions | None = None, *, origin: float | None = None
               ) -> AnswerStats:
        """The blocking form of :meth:`ask`."""
        return collect(self.ask(question, options, origin=origin))

    def answer_turn(self, turn: list[int], options: GenerationOptions | None = None, *,
                    origin: float | None = None, on_complete: Callable[[list[int]], None] | None = None
                    ) -> Iterator[GenerationChunk]:
        """Stream the answer to the ids ``turn`` after the prefix (a question, or a conversation's turns
        and its next question). ``on_complete`` gets the turn closed by the answer (its ids, the
        answer's, and the end-of-turn id of an answer cut short) once the answer is complete."""
        with self._exclusive():
            options = options or GenerationOptions()
            started = time.perf_counter()
            if origin is None:
                origin = self.opened_at if self._answers == 0 and self.opened_at is not None else started
            self._check_prompt(len(turn))
            timer = StageTimer(device=self.loaded.device)
            with timer.stage("prefill"), torch.no_grad():
                step = self.kv.prefill_turn(turn)
            source = "memory" if step.prefix_was_cached else self.origin.source
            prompt = Prefilled(cache=self.kv.cache, logits=step.logits, attention_mask=step.attention_mask,
                               next_position=step.next_position, prefilled=step.prefilled, source=source)
            prompt_ids = torch.tensor([self.prefix.input_ids[0].tolist() + turn], dtype=torch.long)
            for chunk in stream_generate(
                self.text, prompt, prompt_ids=prompt_ids, options=options,
                tokenizer=self.loaded.processor.tokenizer, decoder=self.decoder, decoder_note=self.decoder_note,
                timer=timer, started=started, origin=origin, warnings=self.warnings,
            ):
                if chunk.stats is not None:
                    closed = turn + chunk.stats.token_ids
                    if chunk.stats.stop_reason != "eos":  # close a cut answer's turn as the template does
                        closed += self.end_of_turn_ids()
                    self.kv.settle(closed)
                    self._answers += 1
                    if on_complete is not None:
                        on_complete(closed)
                yield chunk

    # ------------------------------------------------------------------------------ helpers
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One answer at a time (see the module docstring)."""
        me = threading.get_ident()
        if self._owner == me:
            raise SessionBusy("another answer on this session is still streaming",
                              hint="consume or close the first answer's stream before asking again")
        with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    def _check_prompt(self, turn_tokens: int) -> None:
        """Refuse a turn that does not fit (:class:`PromptTooLong`); warn (once) when the media prefix
        alone already exceeds the model's context (opened without a budget)."""
        prefix, total = self.prefill.length, self.prefill.length + turn_tokens
        budget = self.max_prompt_tokens
        if budget is not None and total > budget and prefix < budget:
            raise PromptTooLong(
                f"the prompt would have {total} tokens ({turn_tokens} of question and conversation after a "
                f"{prefix}-token video prefix), more than --max-prompt-tokens {budget}",
                hint="ask a shorter question, or /reset the conversation (chat)")
        if total > self.context_length and prefix < self.context_length:
            raise PromptTooLong(
                f"the prompt would have {total} tokens ({turn_tokens} of question and conversation after a "
                f"{prefix}-token video prefix), more than the model's context of {self.context_length}",
                hint="ask a shorter question, or /reset the conversation (chat)")
        self._check_context(total)

    def _check_context(self, prompt_tokens: int) -> None:
        limit = self.context_length
        if prompt_tokens > limit:
            message = (
                f"the prompt has {prompt_tokens} tokens, more than the model's context of {limit}: "
                "the answer may be degraded (lower --fps, --max-frames or --max-pixels, or compress harder)"
            )
            if message not in self.warnings:
                self.warnings.append(message)
                if self._warn is not None:
                    self._warn(message)
