"""refseg: segment and track what a person says, hears and clicks, on the Segment Anything family."""

from refseg import io
from refseg.models import load
from refseg.prompts import Box, Mask, Points

__version__ = "0.1.0"
__all__ = ["Box", "Mask", "Points", "__version__", "io", "load"]
