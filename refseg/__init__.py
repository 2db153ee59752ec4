"""refseg: segment and track what a person says, hears and clicks, on the Segment Anything family.

`load`, `io` and the prompts are imported on first use, so that `import refseg` (and the CLI's
argument checks) do not wait for torch and the models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refseg import io
    from refseg.models import load
    from refseg.prompts import Box, Mask, Points

__version__ = "0.1.0"
__all__ = ["Box", "Mask", "Points", "__version__", "io", "load"]

_LAZY = {"io": ("refseg.io", None), "load": ("refseg.models", "load"), "Box": ("refseg.prompts", "Box"),
         "Mask": ("refseg.prompts", "Mask"), "Points": ("refseg.prompts", "Points")}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'refseg' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module) if attr is None else getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
