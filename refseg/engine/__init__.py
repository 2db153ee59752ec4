"""The one streaming loop shared by every method."""

from refseg.engine.hooks import MethodHooks
from refseg.engine.memory_bank import MemoryBank
from refseg.engine.session import FrameResult, ObjectResult, Session

__all__ = ["FrameResult", "MemoryBank", "MethodHooks", "ObjectResult", "Session"]
