"""SAM-I2V: an image SAM upgraded into a promptable video segmenter (paper 001 in shared/papers)."""

from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.methods.sam_i2v.model import SamI2V, SamI2VHooks, upgrade

__all__ = ["SamI2V", "SamI2VConfig", "SamI2VHooks", "upgrade"]
