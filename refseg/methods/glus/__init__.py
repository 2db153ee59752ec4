"""GLUS (Lin et al., CVPR 2025): global context frames and local query frames in one MLLM that
prompts SAM 2 on every frame.

Built: inference (`model.Glus.segment`: a forward pass, or key-frame forward and backward passes)
from the conversation of a call (`conversation`), the frames it reads (`frames`), the image tokens
(`vision`), the LLM pass with [SEG] prompt tokens (`mllm`) and SAM 2's half on the engine
(`hooks`); the official state-dict layout (`checkpoint`); the object contrastive loss
(`contrastive`). Not yet: loading a published GLUS folder, training, the key-frame selector, the
CLI.
"""

from refseg.methods.glus.model import Glus, GlusConfig, GlusResult

__all__ = ["Glus", "GlusConfig", "GlusResult"]
