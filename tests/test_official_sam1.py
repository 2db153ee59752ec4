"""Official SAM (v1) checkpoints at every published size (ViT-B, L, H) compute what the official
`segment_anything` package computes, from the uint8 image to the mask logits at the image size.

The official modules are built as its `build_sam.py` builds them (depth, width, heads, global
attention blocks, window 14), at a 256 px input so that ViT-H stays fast enough for the suite;
random weights perturbed so no zero-initialised tensor hides a difference. The official
`SamPredictor` imports torchvision, so its steps are run as it runs them: `ResizeLongestSide`
resizes the PIL image (PIL, bilinear), `Sam.preprocess` normalises and pads, the prompt encoder
and mask decoder run, `Sam.postprocess_masks` upsamples, crops and resizes.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from refseg.sam.checkpoint import CheckpointError
from refseg.sam.sam1 import load_sam1, sam1_config
from refseg.sam.preprocess import SAM1

SIZE = 256
TOL = 1e-5  # measured <= 6.6e-07 (bench/official_parity.py --only sam1)
SIZES = {"vit_b": (768, 12, 12, [2, 5, 8, 11]), "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
         "vit_h": (1280, 32, 16, [7, 15, 23, 31])}


def official_modeling():
    """`segment_anything.modeling` without the package's __init__, which imports torchvision."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = package
    from segment_anything import modeling

    return modeling


def official_sam(name: str, seed: int = 0):
    m = official_modeling()
    width, depth, heads, globals_ = SIZES[name]
    torch.manual_seed(seed)
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(depth=depth, embed_dim=width, img_size=SIZE, mlp_ratio=4,
                                        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads,
                                        patch_size=16, qkv_bias=True, use_rel_pos=True,
                                        global_attn_indexes=globals_, window_size=14, out_chans=256),
        prompt_encoder=m.PromptEncoder(embed_dim=256, image_embedding_size=(SIZE // 16, SIZE // 16),
                                       input_image_size=(SIZE, SIZE), mask_in_chans=16),
        mask_decoder=m.MaskDecoder(num_multimask_outputs=3,
                                   transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                   num_heads=8),
                                   transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return sam.eval()


def official_predictor(sam, image: np.ndarray):
    """SamPredictor.set_image, then its predict(point, multimask, return_logits=True):
    logits [M, H, W] and IoU [M]."""
    height, width = image.shape[:2]
    scale = SIZE / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    with torch.no_grad():
        features = sam.image_encoder(sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float()))
    return partial(_official_predict, sam, features, (height, width), (new_h, new_w))


def _official_predict(sam, features, size, resized, point: list[float], multimask: bool):
    (height, width), (new_h, new_w) = size, resized
    coords = torch.tensor([[point]]) * torch.tensor([new_w / width, new_h / height])
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=(coords, torch.ones(1, 1, dtype=torch.int)), boxes=None, masks=None)
        low, iou = sam.mask_decoder(image_embeddings=features, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=multimask)
        masks = sam.postprocess_masks(low, (new_h, new_w), (height, width))
    return masks[0], iou[0]


def refseg_predictor(model, image: np.ndarray):
    """refseg's steps for the same use: `predict(point, multimask)` -> logits [H, W] of the
    kept mask (the best predicted IoU of three, or the single mask) and its IoU."""
    height, width = image.shape[:2]
    pixels, _ = model.preprocess(torch.from_numpy(image)[None])
    with torch.no_grad():
        embed = model.encode(pixels)

    def predict(point: list[float], multimask: bool) -> tuple[torch.Tensor, float]:
        xy = SAM1.points(torch.tensor([[point]]), height, width, SIZE)
        with torch.no_grad():
            low, iou = model.decode(embed, xy, torch.ones(1, 1, dtype=torch.int), multimask=multimask)
        return model.postprocess(low, (height, width))[0], float(iou)

    return predict


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    gen = np.random.default_rng(seed)
    coarse = gen.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIZES))
def test_every_published_sam_size_matches_the_official_predictor(name, tmp_path):
    official = official_sam(name)
    path = tmp_path / f"sam_{name}.pth"
    torch.save(official.state_dict(), path)  # the official checkpoints are bare state dicts
    model = load_sam1(path, sam1_config(SIZES[name][0], image_size=SIZE))
    # shrunk and enlarged, portrait and landscape (the preprocessing is the same for every size)
    for height, width in ((300, 200), (120, 250)) if name == "vit_b" else ((300, 200),):
        frame = image(height, width)
        point = [0.6 * width, 0.4 * height]
        theirs, ours = official_predictor(official, frame), refseg_predictor(model, frame)
        for multimask in (False, True):
            expected, iou = theirs(point, multimask)
            logits, ours_iou = ours(point, multimask)
            best = int(iou.argmax()) if multimask else 0
            diff = float((logits - expected[best]).abs().max())
            assert diff <= TOL, f"{name} {height}x{width} multimask={multimask}: max |difference| {diff:.2e}"
            assert abs(ours_iou - float(iou[best])) <= TOL
            assert 0.01 < float((expected[best] > 0).float().mean()) < 0.99, "degenerate mask: no test"


def test_a_wrong_head_count_is_refused(tmp_path):
    """In SAM's ViT the relative-position tables are head_dim wide, so the head count shows in
    the weights: ViT-L given 8 heads instead of 16 fails by name instead of loading."""
    path = tmp_path / "sam_vit_l.pth"
    torch.save(official_sam("vit_l").state_dict(), path)
    config = sam1_config(1024, image_size=SIZE)
    config.vision_config.num_attention_heads = 8
    with pytest.raises(CheckpointError, match=r"rel_pos_h \(27, 64\) vs \(27, 128\)"):
        load_sam1(path, config)
