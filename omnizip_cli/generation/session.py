"""A video decoded, encoded and compressed once, ready for questions.

:class:`Session` is the trunk every command runs on::

    >>> from omnizip_cli import GenerationOptions, Session, load_model
    >>> model = load_model("tiny")
    >>> session = Session.open(model, "samples/talking.mp4")
    >>> first = session.answer("What is said?", GenerationOptions(max_new_tokens=4))
    >>> second = session.answer("Who speaks?", GenerationOptions(max_new_tokens=4))
    >>> second.prefix_source                      # the media prefix was prefilled once
    'memory'
    >>> session.tokens.total.before > session.tokens.total.after
    True

What happens once (:meth:`Session.open`): media decoding, the processor on the question-independent
prompt prefix (system prompt, user-turn header, the media tokens), both encoders, the audio
saliency, the keep plan, and, at the first question, the prefill of the kept prefix into a KV cache.
What happens per question (:meth:`Session.ask`): the question's own tokens are prefilled onto the
cached prefix at their true positions, the answer is decoded, and the cache is rolled back to the
prefix (``follow_up=False``) or the turn is kept so that the next question continues the
conversation (``follow_up=True``). The plan never depends on the question.

Positions: the prefix keeps the positions ``get_rope_index`` gives it (pruned tokens leave gaps);
every later token (question, answer, next turn) sits at the previous token's position + 1, as stock
``generate`` continues after the last prompt token. Conversation turns are kept as token ids (the
model's own answer ids, closed by the template's end-of-turn text), not re-tokenised text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..compression import CompressionSetting, ContextFit, KeepPlan, OmniZipConfig
from ..measure import StageTimer, TokenCounts, count_tokens
from .early_audio import EarlyAudio
from .eager import cache_length, embed_ids, forward_tokens, new_cache, truncate_cache
from .sampling import GenerationOptions
from .stream import AnswerStats, GenerationChunk, collect, resolve_decoder, stream_generate

if TYPE_CHECKING:
    from ..media import DecodedMedia, MediaOptions, MediaSummary
    from ..models.base import EncodedMedia, PreparedPrompt, PrefillInputs
    from ..models.registry import LoadedModel

Compression = CompressionSetting | OmniZipConfig | None


def _as_setting(compression: Compression | str) -> CompressionSetting | None:
    """The setting to fit a budget with (None: a fixed OmniZipConfig, which is only checked)."""
    if isinstance(compression, str):
        return CompressionSetting.from_options(preset=compression)
    if compression is None:
        return CompressionSetting.off()
    return compression if isinstance(compression, CompressionSetting) else None


def _as_config(compression: Compression | str, audio_tokens: int, video_tokens: int) -> OmniZipConfig | None:
    if isinstance(compression, str):
        compression = CompressionSetting.from_options(preset=compression)
    if isinstance(compression, CompressionSetting):
        return compression.resolve(audio_tokens, video_tokens)
    return compression



class Session:
    """One video (or audio file) ready for questions. See the module docstring.

    Attributes (read-only by convention): ``loaded`` (the model), ``media`` (the decoded media,
    None when built from prepared inputs), ``prepared`` (processor output), ``encoded`` (the
    uncompressed prefix in LLM space), ``config`` (the OmniZip config, None when off), ``plan``
    (the keep plan, None when off), ``prefill`` (the prefix the language model sees), ``tokens``
    (prefix tokens per modality before and after), ``timer`` (the stages run by this session).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prepared: PreparedPrompt,
        encoded: EncodedMedia,
        config: OmniZipConfig | None,
        *,
        media: DecodedMedia | None = None,
        timer: StageTimer | None = None,
        decoder: str = "auto",
        head_on_all_positions: bool = False,
        warn: Callable[[str], None] | None = None,
        prefill: PrefillInputs | None = None,
    ) -> None:
        self.loaded = loaded
        self.adapter = loaded.adapter
        self.text = self.adapter.text_model(loaded.model)
        self.prepared = prepared
        self.encoded = encoded
        self.media = media
        self.config = config
        self.timer = timer or StageTimer(device=loaded.device)
        self.head_on_all_positions = head_on_all_positions
        self.warnings: list[str] = []
        self._warn = warn
        wanted = decoder if loaded.fast_decoder or decoder != "auto" else "eager"
        self.decoder, self.decoder_note = resolve_decoder(wanted, loaded.device, loaded.attn_implementation)
        self.context_fit: ContextFit | None = None  # set when opened with a prompt budget
        self._apply(config, prefill)
        self._cache: Any = None  # the prefix (and the current turn) in a DynamicCache
        self._cached_turn: list[int] | None = None  # ids after the prefix known to be in the cache (None: unknown)
        self._prefix_source = "fresh"
        self._turn: list[int] | None = None  # ids after the prefix of the last complete turn(s)

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        loaded: LoadedModel,
        media: str | Path | DecodedMedia,
        *,
        media_options: MediaOptions | None = None,
        compression: Compression | str = "45",
        system: str | None = None,
        timer: StageTimer | None = None,
        record_saliency: bool | None = None,
        overlap: bool | None = None,
        early_audio: EarlyAudio | None = None,
        **kwargs: Any,
    ) -> Session:
        """Decode (unless ``media`` is already decoded), run the processor and the encoders, plan.

        ``compression``: a preset name (``"45"``, ``"35"``), a
        :class:`~omnizip_cli.compression.CompressionSetting` (a retention target is solved for this
        clip's token mix), an :class:`~omnizip_cli.compression.OmniZipConfig`, or None (off).
        ``record_saliency``: None records the audio saliency only when compression is on; True lets
        :meth:`with_compression` compress a session opened uncompressed.
        ``overlap``: when decoding a path, encode its audio track while the video decodes
        (:mod:`.early_audio`; None: :func:`overlap_enabled` decides). ``early_audio``: such work
        already started by the caller (e.g. the CLI, which decodes while the model loads).
        """
        timer = timer or StageTimer(device=loaded.device)
        early, own_early = early_audio, None
        if isinstance(media, (str, Path)) and early is None and overlap_enabled(overlap):
            early = own_early = EarlyAudio(record_saliency=records_saliency(compression, record_saliency))
            early.attach(loaded)
        try:
            if isinstance(media, (str, Path)):
                from ..media import MediaOptions, load_media

                media = load_media(Path(media), media_options or MediaOptions(),
                                   on_audio=early.submit if early is not None else None)
                timer.add("media_decode", media.summary.decode_seconds)
                timer.record_memory("media_decode")
            processor = early.processor(loaded.processor) if early is not None else None
            prepared = prepare(loaded, media, system=system, timer=timer, processor=processor)
            return cls.from_prepared(loaded, prepared, compression, media=media, timer=timer,
                                     record_saliency=record_saliency, early_audio=early, **kwargs)
        finally:
            if own_early is not None:
                own_early.close()

    @classmethod
    def from_prepared(
        cls,
        loaded: LoadedModel,
        prepared: PreparedPrompt,
        compression: Compression | str = "45",
        *,
        media: DecodedMedia | None = None,
        timer: StageTimer | None = None,
        record_saliency: bool | None = None,
        max_prompt_tokens: int | None = None,
        question_reserve: int = 0,
        early_audio: EarlyAudio | None = None,
        **kwargs: Any,
    ) -> Session:
        """Encode prepared processor output (timed per encoder) and plan: what ``profile`` repeats.

        ``max_prompt_tokens``: a budget for the prompt (the prefix plus ``question_reserve`` tokens
        for the question): when the uncompressed prompt exceeds it, a retention that fits is chosen
        (:func:`~omnizip_cli.compression.fit_to_context`; the session's :attr:`context_fit` says
        why), or :class:`~omnizip_cli.compression.ContextTooLong` is raised, before the encoders run.
        ``early_audio``: the audio encoded while the video decoded, used when it matches ``prepared``.
        """
        from ..compression import fit_to_context

        timer = timer or StageTimer(device=loaded.device)
        ids = loaded.adapter.token_ids(loaded.model)
        input_ids = prepared.input_ids
        audio, video = int((input_ids == ids.audio).sum()), int((input_ids == ids.video).sum())
        text = prepared.length - audio - video + question_reserve
        fit = None
        if max_prompt_tokens is not None:
            setting = _as_setting(compression)
            if setting is not None:
                grid = prepared.tensors.get("video_grid_thw")
                frames = int(grid[0][0]) * 2 if grid is not None else 0
                fit = fit_to_context(setting, audio=audio, video=video, text=text, budget=max_prompt_tokens,
                                     frames=frames)
                compression = fit.setting
        config = _as_config(compression, audio, video)
        record = config is not None if record_saliency is None else record_saliency
        record = record and audio > 0
        early = early_audio.encoding_for(prepared, record_saliency=record, timer=timer) \
            if early_audio is not None and audio > 0 else None
        encoded = loaded.adapter.encode(loaded.model, prepared, record_saliency=record, timer=timer, audio=early)
        session = cls(loaded, prepared, encoded, config, media=media, timer=timer, **kwargs)
        if max_prompt_tokens is not None:
            session._fit_budget(fit, max_prompt_tokens, question_reserve)
        return session

    def _fit_budget(self, fit: ContextFit | None, budget: int, reserve: int) -> None:
        """After planning: re-plan with stronger retentions while the kept prompt exceeds ``budget``."""
        from dataclasses import replace

        from ..compression import ContextTooLong
        from ..compression.budget import retention_below

        media = self.tokens.audio_video.before
        room = budget - reserve - self.tokens.text.before
        reason = fit.reason if fit is not None else None
        for _ in range(6):
            if self.prefill.length + reserve <= budget:
                break
            if fit is None or self.config is None:
                raise ContextTooLong(
                    f"the prompt has {self.prefill.length + reserve} tokens after compression, more than "
                    f"--max-prompt-tokens {budget}",
                    hint="compress harder (a lower --retention), or lower --fps, --max-frames or --max-pixels",
                )
            stronger = retention_below(fit.setting, self.tokens.audio_video.after, media, room)
            fit = replace(fit, setting=stronger, reason=(reason or "the asked setting kept too many tokens")
                          + f" (planned at retention target {stronger.retention:g}: plans of short clips keep "
                            "more than their target)")
            self._apply(stronger.resolve(self.tokens.audio.before, self.tokens.video.before))
        else:
            if self.prefill.length + reserve > budget:
                raise ContextTooLong(
                    f"the prompt still has {self.prefill.length + reserve} tokens after compression, more than "
                    f"--max-prompt-tokens {budget}",
                    hint="lower --fps, --max-frames or --max-pixels, or --max-audio-seconds",
                )
        self.context_fit = fit

    def with_compression(self, compression: Compression | str) -> Session:
        """A session on the same encoded media with another compression setting (no decode, no encode).

        The new session shares the encoded prefix; only the keep plan and the prefill differ.
        """
        config = _as_config(compression, self.tokens.audio.before, self.tokens.video.before)
        if config is not None and self.encoded.audio_scores is None and self.tokens.audio.before > 0:
            raise ValueError("this session was opened without audio saliency: open it with record_saliency=True")
        return Session(self.loaded, self.prepared, self.encoded, config, media=self.media,
                       timer=StageTimer(device=self.loaded.device), decoder=self.decoder,
                       head_on_all_positions=self.head_on_all_positions, warn=self._warn)

    def _apply(self, config: OmniZipConfig | None, prefill: PrefillInputs | None = None) -> None:
        """Plan (when compressing) and build the prefix prefill and its token counts.

        ``prefill`` given (a prefix read back from the disk cache): no plan, that prefill is used.
        """
        self.config = config
        self.plan: KeepPlan | None = None
        if config is not None and prefill is None:
            with self.timer.stage("keep_plan"):
                self.plan = self._build_plan(config)
        self.prefill: PrefillInputs = prefill or self.adapter.prefill_inputs(self.encoded, self.plan)
        ids = self.adapter.token_ids(self.loaded.model)
        self.tokens: TokenCounts = count_tokens(self.encoded.input_ids, self.prefill.kept, audio_token_id=ids.audio,
                                                video_token_id=ids.video)
        self._cache = None

    def _build_plan(self, config: OmniZipConfig) -> KeepPlan:
        return keep_plan(self.loaded, self.encoded, config)

    # ------------------------------------------------------------------------------ facts
    @property
    def summary(self) -> MediaSummary | None:
        return self.media.summary if self.media is not None else None

    @property
    def prefix_length(self) -> int:
        """Tokens of the media prefix before compression."""
        return self.encoded.length

    @property
    def group_rows(self) -> list[dict[str, Any]]:
        """Per time group figures of the plan (empty when uncompressed)."""
        if self.plan is None:
            return []
        return list(self.plan.groups.to_rows())

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    # ------------------------------------------------------------------------------ questions
    def question_ids(self, question: str, follow_up: bool = False) -> list[int]:
        """The ids this question adds after the prefix (or after the previous turn when ``follow_up``)."""
        templates = self.prepared.templates
        tokenizer = self.loaded.processor.tokenizer
        text = question + templates.question_suffix
        if follow_up and self._turn:
            between = templates.next_turn
            spoken = tokenizer.decode([self._turn[-1]], skip_special_tokens=False)
            if spoken and between.startswith(spoken):  # the answer already closed its turn
                between = between[len(spoken):]
            text = between + text
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def conversation_ids(self) -> list[int]:
        """The uncompressed ids of the whole conversation so far (prefix included)."""
        return self.encoded.input_ids[0].tolist() + list(self._turn or [])

    def reset(self) -> None:
        """Forget the conversation; the video and its cached prefix stay."""
        self._turn = None

    def ask(self, question: str, options: GenerationOptions | None = None, *, follow_up: bool = False
            ) -> Iterator[GenerationChunk]:
        """Stream the answer to ``question``; the last chunk carries :class:`AnswerStats`.

        ``follow_up=False`` answers from the media prefix alone (an independent question);
        ``follow_up=True`` continues the conversation of the previous questions. Either way the turn
        is remembered, so that a later follow-up continues from it.
        """
        options = options or GenerationOptions()
        timer = StageTimer(device=self.loaded.device)
        started = time.perf_counter()
        follow = follow_up and bool(self._turn)
        turn = list(self._turn or []) if follow else []
        turn.extend(self.question_ids(question, follow_up=follow))
        source = self._prefix_source if self._cache is not None else "fresh"
        prefix_len = self.prefill.length
        total = prefix_len + len(turn)
        self._check_context(total)
        prefilled = 0
        with timer.stage("prefill"), torch.no_grad():
            if self._cache is None:
                cache = new_cache(self.text)
                forward_tokens(self.text, self.prefill.embeds, self.prefill.attention_mask, self.prefill.position_ids,
                               cache, lm_kwargs=self.prefill.lm_kwargs)
                self._cache, self._cached_turn = cache, []
                prefilled += prefix_len
            # Keep what the cache holds of this turn; prefill the rest (for a follow-up: the last
            # answer's unforwarded tail and the turn separator; always: the question and its suffix).
            known = self._cached_turn if self._cached_turn is not None else []
            common = 0
            while common < min(len(known), len(turn) - 1) and known[common] == turn[common]:
                common += 1
            # Unknown until this answer completes: an interrupt from here on (Ctrl-C inside the
            # truncation, the prefill or the decoding, or the caller closing this generator) leaves
            # the cache holding an unknown tail, which the next question truncates back to the prefix.
            self._cached_turn = None
            truncate_cache(self._cache, prefix_len + common)
            pending = torch.tensor([turn[common:]], dtype=torch.long, device=self.text.device)
            last_prefix_position = self.prefill.position_ids[:, :, -1:]
            offsets = torch.arange(common + 1, len(turn) + 1, device=last_prefix_position.device)
            positions = last_prefix_position + offsets.to(last_prefix_position.dtype).view(1, 1, -1)
            mask = self.prefill.attention_mask.new_ones((1, total))
            mask[:, :prefix_len] = self.prefill.attention_mask
            logits = forward_tokens(self.text, embed_ids(self.text, pending), mask, positions, self._cache,
                                    head_on_all_positions=self.head_on_all_positions)
            prefilled += int(pending.shape[1])
        self._prefix_source = "memory"
        prompt_ids = torch.tensor([self.encoded.input_ids[0].tolist() + turn], dtype=torch.long)
        stats: AnswerStats | None = None
        for chunk in stream_generate(
            self.text, cache=self._cache, logits=logits, attention_mask=mask,
            next_position=positions[0, 0, -1] + 1, prompt_ids=prompt_ids, options=options,
            tokenizer=self.loaded.processor.tokenizer, decoder=self.decoder, decoder_note=self.decoder_note,
            timer=timer, started=started,
        ):
            if chunk.stats is not None:
                stats = chunk.stats
                stats.prefilled_tokens = prefilled
                stats.prefill_seconds = timer.seconds("prefill")
                stats.prefix_source = source
                stats.prefill_logits = logits[0].detach()
                stats.warnings = list(self.warnings)
                turn.extend(stats.token_ids)
                if stats.stop_reason != "eos":  # close a cut answer's turn as the template does
                    turn.extend(self._end_of_turn_ids())
                self._cached_turn = turn[: cache_length(self._cache) - prefix_len]
                self._turn = turn
            yield chunk

    def answer(self, question: str, options: GenerationOptions | None = None, *, follow_up: bool = False
               ) -> AnswerStats:
        """The blocking form of :meth:`ask`."""
        return collect(self.ask(question, options, follow_up=follow_up))

    # ------------------------------------------------------------------------------ helpers
    def _end_of_turn_ids(self) -> list[int]:
        """The ids that close an answer cut short by ``max_new_tokens`` (the template's end-of-turn token)."""
        tokenizer = self.loaded.processor.tokenizer
        between = self.prepared.templates.next_turn
        ids = tokenizer(between, add_special_tokens=False)["input_ids"]
        return list(ids[:1])

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


def records_saliency(compression: Compression | str, record_saliency: bool | None) -> bool:
    """Whether a session opened with these arguments records the audio saliency."""
    if record_saliency is not None:
        return record_saliency
    setting = _as_setting(compression)
    return setting is None or setting.source != "off"


#: Media decoding overlaps model work only with at least this many usable cores (see overlap_enabled).
OVERLAP_MIN_CPUS = 4


def overlap_enabled(overlap: bool | None = None, cpus: int | None = None) -> bool:
    """Whether media decoding overlaps model work: the audio track encoded while the video decodes
    (:mod:`.early_audio`), and in ``ask``/``chat`` the decoding beside the model load.

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


def keep_plan(loaded: LoadedModel, encoded: EncodedMedia, config: OmniZipConfig) -> KeepPlan:
    """The OmniZip keep plan of an encoded prefix (batch size 1), with the family's token ids."""
    from ..compression import build_keep_plan

    adapter = loaded.adapter
    ids = adapter.token_ids(loaded.model)
    # A family may define its own time groups (optional adapter method; None: runs of positions).
    grouping = getattr(adapter, "time_groups", None)
    return build_keep_plan(
        encoded.embeds[0],
        encoded.input_ids[0],
        encoded.audio_scores,
        encoded.video_grid_thw,
        audio_token_id=ids.audio,
        video_token_id=ids.video,
        spatial_merge_size=adapter.spatial_merge_size(loaded.model),
        config=config,
        time_groups=grouping(encoded, config) if grouping is not None else None,
    )


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
