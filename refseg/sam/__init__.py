"""SAM-family parts built from `transformers` modules (see `refseg.sam.model.Sam2`)."""

from refseg.sam.config import sam2_config, tiny_test_config
from refseg.sam.model import Sam2

__all__ = ["Sam2", "sam2_config", "tiny_test_config"]
