"""The SAM 2s refseg ships under refseg/weights/, by the name `load_sam2` and `--sam2` take. No
heavy imports: the CLI checks `--sam2` against these names before torch loads."""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
# name -> (folder, the training that makes it)
SAM2 = {
    "synth": (WEIGHTS / "sam2_synth", "`refseg train configs/sam2_synth_image.yaml` then configs/sam2_synth.yaml"),
    "synth-shape": (WEIGHTS / "sam2_synth_shape",
                    "`refseg train configs/sam2_synth_image_shape.yaml` then configs/sam2_synth_shape.yaml"),
}
