"""The one error the text front ends raise."""


class TextError(ValueError):
    """Text that cannot be synthesized (empty, or not encodable)."""
