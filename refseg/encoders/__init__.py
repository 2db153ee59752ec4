"""Encoders of the other modalities: text (and, later, audio and early-fusion vision-language)."""

from refseg.encoders.text import TextEncoder, TextTokens

__all__ = ["TextEncoder", "TextTokens"]
