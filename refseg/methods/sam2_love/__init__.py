"""SAM2-LOVE (Wang et al., CVPR 2025): text + audio + video referring segmentation with a
propagated [seg] token that prompts SAM 2 on the first frame."""

from refseg.methods.sam2_love.model import ClipFeatures, LoveConfig, Sam2Love, chain_frames
from refseg.methods.sam2_love.stream import LoveOnlineStream, LoveStream

__all__ = ["ClipFeatures", "LoveConfig", "LoveOnlineStream", "LoveStream", "Sam2Love", "chain_frames"]
