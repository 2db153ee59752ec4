"""The SAM 2 image encoder (Hiera trunk + FPN neck) run stage by stage, with a hook per stage.

SAM 2 paper, Sec. 4 "Image encoder": a hierarchical Hiera trunk whose four stages produce
features at strides 4, 8, 16 and 32, fused top-down by an FPN neck into 256-channel maps. The
stride-16 and stride-32 levels are summed into the lowest-resolution embedding; the stride-4 and
stride-8 levels feed the mask decoder's upsampling path ("high-resolution features").

Methods adapt the trunk between stages (SAMWISE puts its Cross-Modal Temporal adapters after
the last three stages; SAM-I2V its temporal feature integrator). They do so through a
`StageHook`, called after each stage with the features of all T frames of the clip, so a hook
can mix information across time. With no hook the result equals the stock `transformers`
vision encoder exactly (same modules, same operations, same order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor
from transformers.models.sam2.modeling_sam2 import Sam2VisionModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMaskDecoder

from refseg.sam.preprocess import SAM2


class StageHook(Protocol):
    """Called after each Hiera stage: `hook(stage, features) -> features`.

    `features` is [T, h_s, w_s, C_s] (channels last, T = frames of the clip); the returned
    tensor has the same shape, or k copies of it stacked [k T, ...] (`trunk_stages`). It feeds
    both the next stage and the FPN neck.
    """

    def __call__(self, stage: int, features: Tensor) -> Tensor: ...


@dataclass
class ImageFeatures:
    """Multi-scale features of T frames, channels first.

    high_res: [T, C/8, 4h, 4w] and [T, C/4, 2h, 2w], already projected by the mask decoder's
              `conv_s0` / `conv_s1` (as SAM 2 precomputes them once per frame).
    embed:    [T, C, h, w], the lowest-resolution image embedding (C = 256, h = w = S/16).
    pos:      [T, C, h, w], its sine positional encoding.
    trunk:    the trunk's stage outputs before the neck, each [T, C_s, h_s, w_s] (Hiera: strides
              4, 8, 16, 32), for methods that read the trunk (`MethodHooks.encode_output`).
    """

    high_res: list[Tensor]
    embed: Tensor
    pos: Tensor
    trunk: list[Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return self.embed.shape[0]

    def frame(self, t: int) -> ImageFeatures:
        """Features of frame `t` alone (T = 1)."""
        return ImageFeatures([h[t : t + 1] for h in self.high_res], self.embed[t : t + 1], self.pos[t : t + 1],
                             [s[t : t + 1] for s in self.trunk])


def stage_blocks(vision: Sam2VisionModel) -> list[range]:
    """Indices of the Hiera blocks of each stage."""
    ends = [int(e) for e in vision.backbone.stage_ends]
    return [range(start, end + 1) for start, end in zip([0] + [e + 1 for e in ends[:-1]], ends)]


def encode_images(
    vision: Sam2VisionModel,
    mask_decoder: Sam2VideoMaskDecoder,
    pixel_values: Tensor,
    hook: StageHook | None = None,
) -> ImageFeatures:
    """Encode T frames with the stock vision encoder's modules, stage by stage.

    Args:
        vision: the `transformers` vision encoder (Hiera `backbone` + FPN `neck`).
        mask_decoder: the SAM 2 mask decoder, whose `conv_s0` / `conv_s1` project the two
            high-resolution levels.
        pixel_values: [T, 3, S, S], normalised with the ImageNet mean and std.
        hook: optional `StageHook` applied after every stage.
    Returns:
        `ImageFeatures` for the T frames.
    """
    stage_outputs = trunk_stages(vision, pixel_values, hook)
    fpn, fpn_pos = vision.neck(tuple(stage_outputs))
    levels = vision.num_feature_levels
    fpn = list(fpn[-levels:][::-1])  # high -> low resolution
    fpn_pos = list(fpn_pos[-levels:][::-1])
    high_res = [mask_decoder.conv_s0(fpn[0]), mask_decoder.conv_s1(fpn[1])]
    trunk_maps = [s.permute(0, 3, 1, 2) for s in stage_outputs]
    return ImageFeatures(high_res=high_res, embed=fpn[-1], pos=fpn_pos[-1], trunk=trunk_maps)


def trunk_stages(vision: Sam2VisionModel, pixel_values: Tensor, hook: StageHook | None = None) -> list[Tensor]:
    """The Hiera trunk's stage outputs, each [T, h_s, w_s, C_s] (strides 4, 8, 16, 32), for
    pixel_values [T, 3, S, S]; `hook` (optional) adapts each stage's output before the next. A
    hook may return k copies of its batch [k T, ...] (copy-major: one per prompt that makes the
    features differ, e.g. SAMWISE's expressions); the earlier stages' outputs are then repeated
    alike, and every output from there on has k T rows."""
    trunk = vision.backbone
    hidden = trunk.patch_embed(pixel_values)  # [T, S/4, S/4, C0]
    hidden = hidden + trunk._get_pos_embed(hidden.shape[1:3])
    stage_outputs: list[Tensor] = []
    for stage, blocks in enumerate(stage_blocks(vision)):
        for i in blocks:
            hidden = trunk.blocks[i](hidden)
        if hook is not None:
            hooked = hook(stage, hidden)
            if hooked.shape[1:] != hidden.shape[1:] or hooked.shape[0] % hidden.shape[0]:
                raise ValueError(f"stage hook changed the shape of stage {stage}: {tuple(hidden.shape)} -> "
                                 f"{tuple(hooked.shape)}")
            if hooked.shape[0] != hidden.shape[0]:  # copies of the frames (one per prompt): earlier stages follow
                copies = hooked.shape[0] // hidden.shape[0]
                stage_outputs = [s.repeat(copies, 1, 1, 1) for s in stage_outputs]
            hidden = hooked
        stage_outputs.append(hidden)
    return stage_outputs


def normalise_frames(frames: Tensor, image_size: int) -> Tensor:
    """Turn uint8 frames into SAM 2 input.

    Args:
        frames: [T, H, W, 3] uint8 RGB, any H and W.
        image_size: the model's square input side S.
    Returns:
        [T, 3, S, S] float32: resized (bilinear, antialiased, aspect ratio not kept, as SAM 2
        does), scaled to [0, 1] and normalised by the ImageNet mean and std
        (`refseg.sam.preprocess.SAM2`; other methods' rules are other `Preprocess` values).
    """
    return SAM2.pixels(frames, image_size)
