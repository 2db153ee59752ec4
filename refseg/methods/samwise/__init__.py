"""SAMWISE: text-prompted streaming video segmentation (paper 000 in shared/papers)."""

from refseg.methods.samwise.model import Samwise, SamwiseConfig, SamwiseHooks, SamwiseStream

__all__ = ["Samwise", "SamwiseConfig", "SamwiseHooks", "SamwiseStream"]
