"""The prepared prefix: the value a Session answers from, planned fresh or read back from disk.

A :class:`PreparedPrefix` is everything a question needs from its video: the prefill of the kept
media prefix (embeddings, mask, positions, the family's language-model arguments), the uncompressed
prefix ids (the repetition penalty's history), the prompt templates, and the facts the report
shows (token counts, compression config, the plan's group rows, the media summary, what fitting
the prompt budget decided). :func:`plan_prefix` builds one from encoded media (the keep plan and
the budget rule); :mod:`.prefix_cache` writes one to disk and reads it back. :class:`PrefixOrigin`
says where a session's prefix came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compression import CompressionSetting, ContextFit, KeepPlan, OmniZipConfig, PromptCounts

if TYPE_CHECKING:
    import torch

    from ..measure import StageTimer, TokenCounts
    from ..media import MediaSummary
    from ..models.base import EncodedMedia, PrefillInputs, PreparedPrompt, PromptTemplates
    from ..models.registry import LoadedModel

#: What ``compression`` may be wherever a prefix is planned: a preset name, a setting (a retention
#: target is solved per clip), a fixed config, or None (off).
Compression = CompressionSetting | OmniZipConfig | str | None


def as_setting(compression: Compression) -> CompressionSetting | None:
    """The setting the budget rule fits (None: a fixed :class:`OmniZipConfig`, which is only checked)."""
    if isinstance(compression, str):
        return CompressionSetting.from_options(preset=compression)
    if compression is None:
        return CompressionSetting.off()
    return compression if isinstance(compression, CompressionSetting) else None


def as_config(compression: Compression, audio_tokens: int, video_tokens: int) -> OmniZipConfig | None:
    """The OmniZip config for a clip with these token counts (None: off)."""
    setting = as_setting(compression)
    if setting is None:
        return compression  # type: ignore[return-value]  # a fixed config
    return setting.resolve(audio_tokens, video_tokens)


def records_saliency(compression: Compression, record_saliency: bool | None = None) -> bool:
    """Whether opening with ``compression`` records the audio saliency (``record_saliency`` decides when given)."""
    if record_saliency is not None:
        return record_saliency
    setting = as_setting(compression)
    return setting is None or setting.source != "off"


def jsonable(value: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def canonical(value: Any) -> str:
    """One JSON text per value (sorted keys, no spaces): equal values, equal texts."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"))


@dataclass
class PreparedPrefix:
    """A video's prefix, ready to be prefilled (see the module docstring).

    ``planned``: the kept prefix length of every setting the budget rule planned while building
    this prefix (by :func:`canonical` of the setting, ``"null"`` for a fixed config), so that the
    rule can be replayed on a cached prefix without planning. ``plan`` is None when compression is
    off or the prefix was read from disk.
    """

    prefill: PrefillInputs
    input_ids: torch.Tensor  # [1, P] the uncompressed prefix ids
    templates: PromptTemplates
    kind: str
    config: OmniZipConfig | None
    tokens: TokenCounts
    counts: PromptCounts
    summary: MediaSummary | None = None
    group_rows: list[dict[str, Any]] = field(default_factory=list)
    context_fit: ContextFit | None = None
    planned: dict[str, int] = field(default_factory=dict)
    plan: KeepPlan | None = None

    @property
    def length(self) -> int:
        """Tokens of the media prefix before compression."""
        return int(self.input_ids.shape[1])


@dataclass(frozen=True)
class PrefixOrigin:
    """Where a session's prefix came from.

    ``source``: ``"fresh"`` (decoded, encoded and planned now) or ``"disk"`` (read from the prefix
    cache). ``cached``: whether the disk cache was consulted at all (False: ``cache=False`` or off).
    For ``disk``: the entry's ``path``, ``entry_bytes``, ``load_seconds`` (the read) and
    ``saved_seconds`` (the set-up stages that the entry's build waited for, per stage in
    ``stage_seconds``). For ``fresh``: whether the entry was ``stored`` and where, or why not
    (``not_stored``).
    """

    source: str = "fresh"
    cached: bool = False
    path: str | None = None
    stored: bool = False
    not_stored: str | None = None
    entry_bytes: int | None = None
    load_seconds: float | None = None
    saved_seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any] | None:
        """The ``prefix_cache`` object of the ``--json`` output (None when the cache was not used)."""
        if not self.cached:
            return None
        if self.source == "disk":
            return {"source": "disk", "path": self.path, "entry_bytes": self.entry_bytes,
                    "load_seconds": self.load_seconds, "saved_seconds": self.saved_seconds,
                    "stage_seconds": dict(self.stage_seconds)}
        return {"source": "fresh", "path": self.path, "stored": self.stored, "not_stored": self.not_stored}


def prompt_counts(loaded: LoadedModel, prepared: PreparedPrompt) -> PromptCounts:
    """The prefix's audio, video and text tokens and its frames: what the budget rule fits."""
    ids = loaded.adapter.token_ids(loaded.model)
    audio = int((prepared.input_ids == ids.audio).sum())
    video = int((prepared.input_ids == ids.video).sum())
    grid = prepared.video_grid
    frames = grid[0] * loaded.adapter.vision_geometry(loaded.model).temporal_patch if grid is not None else 0
    return PromptCounts(audio=audio, video=video, text=prepared.length - audio - video, frames=frames)


def keep_plan(loaded: LoadedModel, encoded: EncodedMedia, config: OmniZipConfig) -> KeepPlan:
    """The OmniZip keep plan of an encoded prefix (batch size 1), with the family's token ids."""
    from ..compression import build_keep_plan

    adapter = loaded.adapter
    ids = adapter.token_ids(loaded.model)
    grouping = getattr(adapter, "time_groups", None)  # optional: a family's own time groups
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


def plan_prefix(
    loaded: LoadedModel,
    prepared: PreparedPrompt,
    encoded: EncodedMedia,
    compression: Compression,
    *,
    timer: StageTimer,
    summary: MediaSummary | None = None,
    max_prompt_tokens: int | None = None,
    question_reserve: int = 0,
    counts: PromptCounts | None = None,
) -> PreparedPrefix:
    """Plan (when compressing) and build the prefill of an encoded prefix, under the prompt budget.

    With ``max_prompt_tokens``, the budget rule (:func:`~omnizip_cli.compression.fit_budget`) picks
    the setting: the asked one when the prompt fits, else a retention target that fits, re-planned
    stronger while the kept prompt is still over (each plan timed as ``keep_plan``), or
    :class:`~omnizip_cli.compression.ContextTooLong`.
    """
    from ..compression import fit_budget

    counts = counts or prompt_counts(loaded, prepared)
    built: dict[str, tuple[OmniZipConfig | None, KeepPlan | None, PrefillInputs]] = {}

    def build(setting: CompressionSetting | None) -> tuple[OmniZipConfig | None, KeepPlan | None, PrefillInputs]:
        key = canonical(setting)
        if key not in built:
            config = as_config(setting if setting is not None else compression, counts.audio, counts.video)
            plan = None
            if config is not None:
                with timer.stage("keep_plan"):
                    plan = keep_plan(loaded, encoded, config)
            built[key] = (config, plan, loaded.adapter.prefill_inputs(encoded, plan))
        return built[key]

    setting = as_setting(compression)
    fit = None
    if max_prompt_tokens is not None:
        fit = fit_budget(setting, counts, budget=max_prompt_tokens, reserve=question_reserve,
                         kept_length=lambda s: build(s)[2].length)
        setting = fit.setting if fit is not None else None
    config, plan, prefill = build(setting)
    return prefix_of_plan(loaded, prepared, encoded, config, plan, prefill=prefill, counts=counts, summary=summary,
                          context_fit=fit, planned={key: value[2].length for key, value in built.items()})


def prefix_of_plan(
    loaded: LoadedModel,
    prepared: PreparedPrompt,
    encoded: EncodedMedia,
    config: OmniZipConfig | None,
    plan: KeepPlan | None,
    *,
    prefill: PrefillInputs | None = None,
    counts: PromptCounts | None = None,
    summary: MediaSummary | None = None,
    context_fit: ContextFit | None = None,
    planned: dict[str, int] | None = None,
) -> PreparedPrefix:
    """The prepared prefix of encoded media under a keep plan (None: everything kept), with its token
    counts and group rows; ``prefill``: the adapter's prefill of that plan when already built."""
    from ..measure import count_tokens

    prefill = prefill if prefill is not None else loaded.adapter.prefill_inputs(encoded, plan)
    ids = loaded.adapter.token_ids(loaded.model)
    tokens = count_tokens(encoded.input_ids, prefill.kept, audio_token_id=ids.audio, video_token_id=ids.video)
    return PreparedPrefix(
        prefill=prefill, input_ids=encoded.input_ids, templates=prepared.templates, kind=encoded.kind,
        config=config, tokens=tokens, counts=counts or prompt_counts(loaded, prepared), summary=summary,
        group_rows=list(plan.groups.to_rows()) if plan is not None else [], context_fit=context_fit,
        planned=dict(planned or {}), plan=plan,
    )


def refit_cached(
    prefix: PreparedPrefix,
    compression: Compression,
    *,
    max_prompt_tokens: int | None,
    question_reserve: int,
) -> ContextFit | None | bool:
    """Replay the budget rule on a prefix read from disk, for this request's budget and question
    reserve (neither is in the cache key: they change the prefix only through the setting they choose).

    Returns the fit a fresh open would decide (None: no budget, or a fixed config that fits), or
    False when a fresh open would build another prefix (another setting, or a plan the entry's build
    did not make) or refuse the request: the entry is then not used.
    """
    from ..compression import ContextTooLong, fit_budget

    stored = prefix.context_fit.setting if prefix.context_fit is not None else None
    if max_prompt_tokens is None:  # no budget: only a prefix planned with the asked setting itself will do
        return None if prefix.context_fit is None or not prefix.context_fit.changed else False

    class _Unplanned(Exception):
        pass

    def kept_length(setting: CompressionSetting | None) -> int:
        key = canonical(setting)
        if key not in prefix.planned:
            raise _Unplanned
        return prefix.planned[key]

    try:
        fit = fit_budget(as_setting(compression), prefix.counts, budget=max_prompt_tokens,
                         reserve=question_reserve, kept_length=kept_length)
    except (_Unplanned, ContextTooLong):
        return False
    chosen = fit.setting if fit is not None else None
    if canonical(chosen) != canonical(stored):
        return False
    return fit
