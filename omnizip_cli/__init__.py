"""omnizip: ask questions about local videos with Qwen2.5-Omni, fast, with OmniZip token compression."""

__version__ = "0.1.0"
