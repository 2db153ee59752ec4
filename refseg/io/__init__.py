"""Video, image and mask I/O."""

from refseg.io.masks import overlay, read_mask_png, write_mask_png
from refseg.io.video import InputError, VideoWriter, frames, read_image, video_fps

__all__ = ["InputError", "VideoWriter", "frames", "overlay", "read_image", "read_mask_png", "video_fps",
           "write_mask_png"]
