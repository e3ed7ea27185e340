"""omnizip: ask questions about local videos with omni models, fast, with OmniZip token compression.

The library API (imported lazily, so ``import omnizip_cli`` and ``omnizip --help`` stay instant)::

    from omnizip_cli import GenerationOptions, Session, load_model

    model = load_model("Qwen/Qwen2.5-Omni-7B")          # or a folder, or "tiny"
    session = Session.open(model, "clip.mp4")            # decode, encode, compress once (disk cache first)
    for chunk in session.ask("What is said?"):           # stream the answer
        print(chunk.text, end="")
    print(session.answer("Who speaks?").text)            # another question, prefix reused
    chat = session.conversation()                        # follow-ups continue the conversation
    print(chat.answer("What is said?").text, chat.answer("And then?").text)

    # Options are typed: Session.open(model, "clip.mp4", OpenOptions(compression="35", cache=False))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = [
    "PRESETS",
    "AnswerStats",
    "CompressionSetting",
    "Conversation",
    "GenerationChunk",
    "GenerationOptions",
    "LoadedModel",
    "MediaOptions",
    "ModelSpec",
    "OmniZipConfig",
    "OpenOptions",
    "Session",
    "load_model",
]

_LAZY = {
    "PRESETS": "omnizip_cli.compression",
    "CompressionSetting": "omnizip_cli.compression",
    "OmniZipConfig": "omnizip_cli.compression",
    "AnswerStats": "omnizip_cli.generation",
    "GenerationChunk": "omnizip_cli.generation",
    "GenerationOptions": "omnizip_cli.generation",
    "Session": "omnizip_cli.generation",
    "OpenOptions": "omnizip_cli.generation",
    "Conversation": "omnizip_cli.generation",
    "LoadedModel": "omnizip_cli.models",
    "ModelSpec": "omnizip_cli.models",
    "MediaOptions": "omnizip_cli.media",
}

if TYPE_CHECKING:
    from .compression import PRESETS, CompressionSetting, OmniZipConfig
    from .generation import AnswerStats, Conversation, GenerationChunk, GenerationOptions, OpenOptions, Session
    from .media import MediaOptions
    from .models import LoadedModel, ModelSpec


def load_model(spec: Any = "tiny", **options: Any) -> LoadedModel:
    """Load a model: ``spec`` is a :class:`ModelSpec`, or a hub id / folder / tiny name with ``ModelSpec`` options.

    >>> model = load_model("tiny", device="cpu")     # doctest: +SKIP
    """
    from .models import ModelSpec
    from .models import load_model as _load
    from .versions import check_transformers_version

    check_transformers_version()
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec(model=str(spec), **options)
    elif options:
        raise TypeError("give either a ModelSpec or keyword options, not both")
    return _load(spec)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omnizip_cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
