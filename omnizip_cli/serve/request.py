"""A chat-completions request body, checked and turned into a :class:`ChatRequest`.

The body follows OpenAI's chat-completions schema with vLLM's names where they exist
(``mm_processor_kwargs``), and an ``omnizip`` object for compression. What omnizip does with the
messages:

- ``system`` (or ``developer``) messages come first; their text is the system prompt.
- Then user and assistant messages alternate, ending with a user message: the last one is the
  question, the earlier pairs the conversation it follows up on.
- Exactly one media part per conversation, in the first user message: ``video_url``
  (``{"url": ...}``, or DashScope's plain string), ``audio_url``, or ``input_audio``
  (``{"data": base64, "format": "wav"}``). Text parts of a message are joined with a newline; the
  chat template puts the media before the text either way.

Anything omnizip cannot honour (images, tools, log-probabilities, ``n`` > 1, penalties, audio output,
unknown ``mm_processor_kwargs`` or ``omnizip`` keys) is refused with a 400 naming the field; nothing
is silently dropped. Fields that do not change the answer (``user``, ``metadata``, ``store``...) are
accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..terminal import is_valid_text
from .errors import bad_request

if TYPE_CHECKING:
    from ..generation import GenerationOptions
    from ..media import MediaOptions

MEDIA_PART_TYPES = ("video_url", "audio_url", "input_audio")
#: mm_processor_kwargs keys -> MediaOptions fields.
MEDIA_KWARGS = {"fps": "fps", "max_pixels": "max_pixels", "min_pixels": "min_pixels", "max_frames": "max_frames",
                "total_pixels": "total_pixels"}
OMNIZIP_KEYS = ("enabled", "preset", "retention", "rho_audio", "rho_video", "anchor_ratio", "merge_g")
MAX_STOP_STRINGS = 4
#: Fields that change the answer in ways omnizip does not implement: refused unless at their default.
UNSUPPORTED = {
    "tools": None, "tool_choice": None, "functions": None, "function_call": None, "logprobs": False,
    "top_logprobs": None, "logit_bias": None, "frequency_penalty": 0, "presence_penalty": 0, "audio": None,
    "prediction": None, "parallel_tool_calls": None, "best_of": 1, "echo": False,
}


@dataclass(frozen=True)
class MediaPart:
    """The conversation's one media item. ``kind``: the part type; ``url`` for ``video_url`` and
    ``audio_url``; ``data`` and ``format`` for ``input_audio``; ``param``: where it was."""

    kind: str
    url: str | None
    data: str | None
    format: str | None
    param: str


@dataclass(frozen=True)
class ChatRequest:
    """What a request asks, checked. ``turns``: the completed (question, answer) pairs before
    ``question``; ``use_audio_in_video``: None when the request did not say (the server's default:
    the audio track when there is one); ``media_overrides``: ``MediaOptions`` fields from
    ``mm_processor_kwargs``; ``compression``: a ``CompressionSetting``, or None for the server's."""

    model: str | None
    media: MediaPart
    system: str | None
    turns: tuple[tuple[str, str], ...]
    question: str
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    use_audio_in_video: bool | None
    media_overrides: tuple[tuple[str, Any], ...]
    compression: Any

    def generation(self, default_max_tokens: int) -> GenerationOptions:
        from ..generation import GenerationOptions

        return GenerationOptions(max_new_tokens=self.max_tokens or default_max_tokens,
                                 temperature=self.temperature if self.temperature is not None else 0.0,
                                 top_p=self.top_p, seed=self.seed, stop=self.stop)

    def media_options(self, default: MediaOptions) -> MediaOptions:
        """The server's media options with this request's overrides (checked when parsed)."""
        fields = dict(self.media_overrides)
        if self.use_audio_in_video is not None:
            fields["use_audio"] = self.use_audio_in_video
        return dataclasses.replace(default, **fields) if fields else default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{param} must be a string", param)
    if not is_valid_text(value):
        raise bad_request(f"{param} is not valid UTF-8 (a lone surrogate escape)", param)
    return value


def _media_part(part: dict[str, Any], kind: str, param: str) -> MediaPart:
    value = part.get(kind)
    if kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise bad_request(f"{param}.input_audio must be an object with base64 'data' and a 'format'",
                              f"{param}.input_audio")
        fmt = value.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise bad_request(f"{param}.input_audio.format must be a string such as 'wav'", f"{param}.input_audio")
        return MediaPart(kind, None, value["data"], fmt, f"{param}.input_audio")
    if isinstance(value, str):  # DashScope's form: the URL itself
        url = value
    elif isinstance(value, dict) and isinstance(value.get("url"), str):
        url = value["url"]
    else:
        raise bad_request(f"{param}.{kind} must be {{\"url\": \"...\"}} or a URL string", f"{param}.{kind}")
    if not url.strip():
        raise bad_request(f"{param}.{kind} has an empty URL", f"{param}.{kind}")
    return MediaPart(kind, _text(url, f"{param}.{kind}"), None, None, f"{param}.{kind}")


def _content(message: dict[str, Any], index: int) -> tuple[str, list[MediaPart]]:
    """A message's text (its text parts joined by newlines) and its media parts."""
    param = f"messages[{index}].content"
    content = message.get("content")
    if isinstance(content, str):
        return _text(content, param), []
    if content is None:
        return "", []
    if not isinstance(content, list):
        raise bad_request(f"{param} must be a string or a list of content parts", param)
    texts, media = [], []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"{where} must be an object with a 'type'", where)
        kind = part["type"]
        if kind == "text":
            texts.append(_text(part.get("text"), f"{where}.text"))
        elif kind in MEDIA_PART_TYPES:
            media.append(_media_part(part, kind, where))
        elif kind in ("image_url", "input_image", "image"):
            raise bad_request(f"{where}: images are not supported; omnizip answers about one video or audio file",
                              f"{where}.type", "unsupported_content_type")
        else:
            raise bad_request(f"{where}: unknown content part type {kind!r} (expected text, video_url, audio_url "
                              "or input_audio)", f"{where}.type", "unknown_content_type")
    return "\n".join(texts), media


def _messages(messages: Any) -> tuple[str | None, list[tuple[str, str]], str, MediaPart]:
    """(system, completed turns, question, media) from the messages (see the module docstring)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    systems: list[str] = []
    dialogue: list[tuple[str, str, int]] = []
    media: list[tuple[MediaPart, int]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object", f"messages[{i}]")
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise bad_request(f"messages[{i}].role {role!r} is not supported (system, user or assistant)",
                              f"messages[{i}].role")
        if role == "assistant" and message.get("tool_calls"):
            raise bad_request(f"messages[{i}]: tool calls are not supported", f"messages[{i}].tool_calls")
        text, parts = _content(message, i)
        if parts and role != "user":
            raise bad_request(f"messages[{i}]: a {role} message cannot carry media", f"messages[{i}].content")
        media.extend((part, i) for part in parts)
        if role == "system":
            if dialogue:
                raise bad_request(f"messages[{i}]: system messages must come before the conversation",
                                  f"messages[{i}].role")
            systems.append(text)
        else:
            dialogue.append((role, text, i))
    if not media:
        raise bad_request("the request has no video_url, audio_url or input_audio part: omnizip answers questions "
                          "about one video or audio file", "messages", "missing_media")
    if len(media) > 1:
        where = ", ".join(part.param for part, _ in media)
        raise bad_request(f"only one video or audio item per conversation is supported (found {len(media)}: "
                          f"{where})", media[1][0].param, "too_many_media")
    if not dialogue or dialogue[-1][0] != "user":
        raise bad_request("the last message must be a user message (the question)", "messages")
    for k, (role, _, i) in enumerate(dialogue):
        if role != ("user" if k % 2 == 0 else "assistant"):
            raise bad_request(f"messages[{i}]: user and assistant messages must alternate, starting with a user "
                              "message", f"messages[{i}].role")
    if media[0][1] != dialogue[0][2]:
        raise bad_request("the video or audio must be in the first user message", media[0][0].param)
    question = dialogue[-1][1]
    if not question.strip():
        raise bad_request(f"messages[{dialogue[-1][2]}] has no text: ask a question about the media",
                          f"messages[{dialogue[-1][2]}].content")
    turns = [(dialogue[k][1], dialogue[k + 1][1]) for k in range(0, len(dialogue) - 1, 2)]
    for k, (asked, _) in enumerate(turns):
        if not asked.strip():
            raise bad_request(f"messages[{dialogue[2 * k][2]}] has no text question",
                              f"messages[{dialogue[2 * k][2]}].content")
    system = "\n".join(systems) if systems else None
    return system, turns, question, media[0][0]


def _optional_number(body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False
                     ) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or value < low or value > high or (low_open and value == low):
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise bad_request(f"{name} must be a number in {interval} (got {value!r})", name)
    return float(value)


def _max_tokens(body: dict[str, Any]) -> int | None:
    given = {name: body[name] for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None}
    for name, value in given.items():
        if not _is_int(value) or value < 1:
            raise bad_request(f"{name} must be an integer of at least 1 (got {value!r})", name)
    if len(set(given.values())) > 1:
        raise bad_request("max_tokens and max_completion_tokens disagree; give one", "max_completion_tokens")
    return next(iter(given.values()), None)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"stop takes at most {MAX_STOP_STRINGS} strings (got {len(stops)})", "stop")
    return tuple(_text(s, "stop") for s in stops)


def _media_overrides(value: Any) -> tuple[bool | None, tuple[tuple[str, Any], ...]]:
    if value is None:
        return None, ()
    if not isinstance(value, dict):
        raise bad_request("mm_processor_kwargs must be an object", "mm_processor_kwargs")
    unknown = sorted(set(value) - set(MEDIA_KWARGS) - {"use_audio_in_video"})
    if unknown:
        raise bad_request(f"mm_processor_kwargs: unknown key(s) {', '.join(unknown)} (known: use_audio_in_video, "
                          f"{', '.join(MEDIA_KWARGS)})", f"mm_processor_kwargs.{unknown[0]}")
    audio = value.get("use_audio_in_video")
    if audio is not None and not isinstance(audio, bool):
        raise bad_request("mm_processor_kwargs.use_audio_in_video must be true or false",
                          "mm_processor_kwargs.use_audio_in_video")
    overrides = tuple((MEDIA_KWARGS[k], v) for k, v in value.items() if k in MEDIA_KWARGS and v is not None)
    return audio, overrides


def _compression(value: Any) -> Any:
    if value is None:
        return None
    from ..compression import CompressionSetting

    if not isinstance(value, dict):
        raise bad_request("omnizip must be an object such as {\"preset\": \"35\"} or {\"retention\": 0.3}", "omnizip")
    unknown = sorted(set(value) - set(OMNIZIP_KEYS))
    if unknown:
        raise bad_request(f"omnizip: unknown key(s) {', '.join(unknown)} (known: {', '.join(OMNIZIP_KEYS)})",
                          f"omnizip.{unknown[0]}")
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad_request("omnizip.enabled must be true or false", "omnizip.enabled")
    preset = value.get("preset")
    if preset is not None and not isinstance(preset, (str, int)) or isinstance(preset, bool):
        raise bad_request("omnizip.preset must be a preset name such as \"45\" or \"35\"", "omnizip.preset")
    numbers = {k: value.get(k) for k in ("retention", "rho_audio", "rho_video", "anchor_ratio")}
    for name, number in numbers.items():
        if number is not None and not _is_number(number):
            raise bad_request(f"omnizip.{name} must be a number (got {number!r})", f"omnizip.{name}")
    merge_g = value.get("merge_g")
    if merge_g is not None and not _is_int(merge_g):
        raise bad_request(f"omnizip.merge_g must be an integer (got {merge_g!r})", "omnizip.merge_g")
    try:
        return CompressionSetting.from_options(
            no_compress=not enabled, preset=str(preset) if preset is not None else None, merge_g=merge_g,
            **numbers)
    except UsageError as exc:
        field = exc.field or "omnizip"
        message = exc.message.replace("--no-compress", "enabled: false").replace("--", "")
        raise bad_request(f"omnizip: {message}", f"omnizip.{field}" if exc.field else "omnizip") from None


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, default in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != default and value != []:
            raise bad_request(f"{name} is not supported by omnizip serve", name, "unsupported_parameter")
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("n must be 1: omnizip serve returns one choice", "n", "unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
        raise bad_request("modalities: only text output is supported", "modalities", "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict)
                                        or response_format.get("type") != "text"):
        raise bad_request("response_format: only {\"type\": \"text\"} is supported", "response_format",
                          "unsupported_parameter")


def parse_chat_request(body: Any) -> ChatRequest:
    """The checked request (:class:`ChatRequest`); a 400 :class:`~.errors.ApiError` naming the field
    otherwise. Media option values are checked by :meth:`ChatRequest.media_options` against the
    server's defaults (the caller turns a ``UsageError`` into a 400)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    _refuse_unsupported(body)
    system, turns, question, media = _messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be true or false", "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise bad_request("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", "stream_options")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise bad_request("stream_options.include_usage must be true or false", "stream_options.include_usage")
    from ..generation.sampling import SEED_MAX

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= SEED_MAX):
        raise bad_request(f"seed must be an integer in [0, 2^63) (got {seed!r})", "seed")
    audio, overrides = _media_overrides(body.get("mm_processor_kwargs"))
    return ChatRequest(
        model=model, media=media, system=system, turns=tuple(turns), question=question,
        max_tokens=_max_tokens(body), temperature=_optional_number(body, "temperature", 0.0, 2.0),
        top_p=_optional_number(body, "top_p", 0.0, 1.0, low_open=True), seed=seed, stop=_stop(body.get("stop")),
        stream=stream, include_usage=include_usage, use_audio_in_video=audio, media_overrides=overrides,
        compression=_compression(body.get("omnizip")),
    )
