"""GLUS (Lin et al., CVPR 2025): global context frames and local query frames in one MLLM that
prompts SAM 2 on every frame.

Built: inference (`model.Glus.segment`: a forward pass, or key-frame forward and backward passes)
from the conversation of a call (`conversation`), the frames it reads (`frames`), the image tokens
(`vision`), the LLM pass with [SEG] prompt tokens (`mllm`) and SAM 2's half on the engine
(`hooks`); published folders (`checkpoint.load_official_glus`, with the CLIP folder); the object
contrastive loss (`contrastive`). Not yet: `refseg.load` / CLI wiring, the offline default
(SmolLM2 + a SynthRef vision tower), training, the key-frame selector.
"""

from refseg.methods.glus.model import Glus, GlusConfig, GlusResult

__all__ = ["Glus", "GlusConfig", "GlusResult"]
