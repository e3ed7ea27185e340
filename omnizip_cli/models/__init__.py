"""Model families: the adapter protocol, one adapter module per family, loading, tiny checkpoints.

Only the adapter modules (``qwen2_5_omni.py``, ...) name a family's classes and submodules.
"""

from .registry import LoadedModel, ModelSpec, load_model

__all__ = ["LoadedModel", "ModelSpec", "load_model"]
