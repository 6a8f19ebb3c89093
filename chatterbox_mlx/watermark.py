"""The documented name of ``chatterbox_mlx.pipeline.watermark`` (Perth watermark)."""

from .pipeline.watermark import apply_watermark, get_watermark

__all__ = ["apply_watermark", "get_watermark"]
