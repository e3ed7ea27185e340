"""Answers: the Session (media encoded and compressed once), the streaming API and both decoders."""

from .sampling import GenerationOptions
from .session import Session
from .stream import AnswerStats, GenerationChunk, collect, stream_generate

__all__ = ["AnswerStats", "GenerationChunk", "GenerationOptions", "Session", "collect", "stream_generate"]
