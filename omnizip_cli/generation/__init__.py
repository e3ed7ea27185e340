"""Answers: opening a video (the one path), the Session (media encoded and compressed once), the
conversation, the streaming API and both decoders."""

from .conversation import Conversation
from .opening import EncodedVideo, OpenOptions
from .prefix import PreparedPrefix, PrefixOrigin
from .sampling import GenerationOptions
from .session import PromptTooLong, Session, SessionBusy
from .stream import AnswerStats, GenerationChunk, collect, stream_generate

__all__ = [
    "AnswerStats",
    "Conversation",
    "EncodedVideo",
    "GenerationChunk",
    "GenerationOptions",
    "OpenOptions",
    "PreparedPrefix",
    "PrefixOrigin",
    "PromptTooLong",
    "Session",
    "SessionBusy",
    "collect",
    "stream_generate",
]
