"""The one streaming loop shared by every method."""

from refseg.engine.feature_cache import FeatureCache
from refseg.engine.hooks import MethodHooks
from refseg.engine.memory_bank import MemoryBank
from refseg.engine.session import FrameResult, ObjectResult, Session

__all__ = ["FeatureCache", "FrameResult", "MemoryBank", "MethodHooks", "ObjectResult", "Session"]
