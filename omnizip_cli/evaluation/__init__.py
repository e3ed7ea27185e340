"""Measuring runs over many settings: ``profile`` (one clip, timing) and ``evaluate`` (datasets, accuracy)."""
