"""Official SAM 2 / SAM 2.1 checkpoints at every published size compute what the official code
computes: the `sam2` package's `SAM2VideoPredictor` (built from its own configs, random weights)
against refseg's loader and streaming engine on identical pixels and clicks.

The sizes differ in what no key shows (Hiera heads, window sizes, global-attention blocks), so
every size is run, not only the tiny one; a wrong head count must fail these tests. Inputs are
256 px (the official configs at `image_size=256`, the RoPE grid of memory attention to match)
so that the large size stays fast enough for the suite; every window of the trunk is still used.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg.engine import Session
from refseg.io import frames as read_frames
from refseg.prompts import Points
from refseg.sam.checkpoint import config_for_official, load_official
from refseg.sam.config import HIERA_SIZES, build_config, sam2_config
from refseg.sam.image_encoder import normalise_frames

SIZE = 256
TOL = 1e-4
CONFIGS = {  # official config file -> (refseg size, version)
    "configs/sam2/sam2_hiera_t.yaml": ("tiny", "2"),
    "configs/sam2/sam2_hiera_s.yaml": ("small", "2"),
    "configs/sam2/sam2_hiera_b+.yaml": ("base_plus", "2"),
    "configs/sam2/sam2_hiera_l.yaml": ("large", "2"),
    "configs/sam2.1/sam2.1_hiera_t.yaml": ("tiny", "2.1"),
    "configs/sam2.1/sam2.1_hiera_s.yaml": ("small", "2.1"),
    "configs/sam2.1/sam2.1_hiera_b+.yaml": ("base_plus", "2.1"),
    "configs/sam2.1/sam2.1_hiera_l.yaml": ("large", "2.1"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread on both sides: the order of float32 reductions then matches (see
    test_engine_parity.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_predictor(config_file: str, seed: int = 0):
    """The official video predictor at 256 px with random weights, each perturbed by noise so that
    no zero-initialised tensor hides a difference; the occlusion head's last bias is raised so
    that the object is predicted present (random weights would hide every mask behind it)."""
    from sam2.build_sam import build_sam2_video_predictor

    grid = SIZE // 16
    overrides = [f"++model.image_size={SIZE}",
                 f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
                 f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]"]
    torch.manual_seed(seed)
    predictor = build_sam2_video_predictor(config_file, ckpt_path=None, device="cpu",
                                           hydra_overrides_extra=overrides)
    with torch.no_grad():
        for p in predictor.parameters():
            p.add_(0.02 * torch.randn_like(p))
        predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(8.0)
    return predictor.eval()


def frames(num: int, seed: int = 0) -> np.ndarray:
    """[T, 256, 256, 3] uint8: a bright disk moving over smooth noise."""
    gen = np.random.default_rng(seed)
    base = gen.integers(0, 256, (num, 16, 16, 3)).astype(np.float32)
    video = np.repeat(np.repeat(base, 16, axis=1), 16, axis=2) * 0.5
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for t in range(num):
        video[t][(yy - 100 - 3 * t) ** 2 + (xx - 80 - 4 * t) ** 2 < 40 ** 2] = (250, 240, 60)
    return video.astype(np.uint8)


class _Float32Memories(types.ModuleType):
    """`torch` as the official predictor sees it, with its bfloat16 memory storage made float32."""

    bfloat16 = torch.float32

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the official CUDA extension's `get_connected_components` returns, on the CPU: per
    pixel of [N, 1, H, W] binary masks, its 8-connected component's label and area (0 outside)."""
    from scipy import ndimage

    labels = torch.zeros(mask.shape, dtype=torch.int32)
    areas = torch.zeros(mask.shape, dtype=torch.int32)
    for n in range(mask.shape[0]):
        lab, _ = ndimage.label(mask[n, 0].cpu().numpy() > 0, structure=np.ones((3, 3)))
        labels[n, 0] = torch.from_numpy(lab)
        areas[n, 0] = torch.from_numpy(np.bincount(lab.ravel())[lab] * (lab > 0))
    return labels, areas


def official_logits(predictor, video: np.ndarray | Path, click: list[float],
                    memory_dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Per-frame mask logits at the frame size of one clicked object, from the official predictor:
    fed tensors directly for an array of 256 x 256 frames, or reading a folder of JPEG frames
    with its own loader (PIL decoding and resizing) for a path.

    The official predictor stores memories in bfloat16; `memory_dtype=torch.float32` makes it keep
    them in float32. Parity is checked in float32 because bfloat16 rounding is not stable under
    1e-7 differences: 3 of 16 384 memory values of a frame land one bfloat16 step apart (4e-3)
    when the float32 inputs differ by a few 1e-8, which moves the next frame's logits by ~1e-4.
    """
    import sam2.sam2_video_predictor as official

    import sam2.utils.misc as misc

    loader, module, components = official.load_video_frames, official.torch, getattr(misc, "get_connected_components")
    misc.get_connected_components = connected_components  # the hole filling its CUDA build does
    if not isinstance(video, Path):
        pixels = normalise_frames(torch.from_numpy(video), SIZE)
        official.load_video_frames = lambda **kwargs: (pixels, SIZE, SIZE)
    if memory_dtype == torch.float32:
        official.torch = _Float32Memories("torch")
    try:
        with torch.inference_mode():
            state = predictor.init_state(video_path=str(video) if isinstance(video, Path) else "unused")
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=np.array([click], np.float32),
                                            labels=np.array([1], np.int32))
            return [masks[0, 0].clone() for _, _, masks in predictor.propagate_in_video(state)]
    finally:
        official.load_video_frames, official.torch = loader, module
        misc.get_connected_components = components


def refseg_logits(model, video: np.ndarray, click: list[float],
                  memory_dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    session = Session(model, memory_dtype=memory_dtype, num_frames=len(video))
    session.add_prompt(1, Points([click]))
    return [session.push(frame).objects[1].logits for frame in video]


def assert_logits_close(ours: list[torch.Tensor], ref: list[torch.Tensor], tol: float = TOL) -> None:
    diffs = [float((a - b).abs().max()) for a, b in zip(ours, ref, strict=True)]
    assert max(diffs) <= tol, f"max |difference| {max(diffs):.2e} at frame {int(np.argmax(diffs))}"
    assert 0.005 < float((ref[0] > 0).float().mean()) < 0.995, "degenerate reference mask: no test"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Official predictors and their checkpoints saved as the official `.pt` layout, built once."""
    cache: dict[str, tuple[object, object]] = {}

    def get(config_file: str):
        if config_file not in cache:
            cache.clear()  # one size in memory at a time (large is 224 M parameters)
            predictor = official_predictor(config_file)
            path = tmp_path_factory.mktemp("ckpt") / "model.pt"
            torch.save({"model": predictor.state_dict()}, path)
            cache[config_file] = (predictor, path)
        return cache[config_file]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("config_file", list(CONFIGS))
def test_every_published_size_is_recognised_and_matches_the_official_features_and_masks(checkpoints, config_file):
    predictor, path = checkpoints(config_file)
    size, version = CONFIGS[config_file]
    state = torch.load(path, weights_only=True)["model"]
    config = config_for_official(state, image_size=SIZE)
    assert config.to_dict() == sam2_config(size, image_size=SIZE, version=version).to_dict()
    model = load_official(path, config)

    video = frames(2)
    pixels = normalise_frames(torch.from_numpy(video[:1]), SIZE)
    with torch.inference_mode():
        ours = model.encode_images(pixels)
        theirs = predictor.forward_image(pixels)
    for name, a, b in (("embedding", ours.embed, theirs["backbone_fpn"][2]),
                       ("high-res 0", ours.high_res[0], theirs["backbone_fpn"][0]),
                       ("high-res 1", ours.high_res[1], theirs["backbone_fpn"][1])):
        assert float((a - b).abs().max()) <= TOL, f"{name}: max |difference| {float((a - b).abs().max()):.2e}"
    assert_logits_close(refseg_logits(model, video, [110, 120]), official_logits(predictor, video, [110, 120]))


@pytest.mark.slow
def test_a_click_tracked_over_20_frames_with_base_plus_gives_the_official_masks(checkpoints):
    predictor, path = checkpoints("configs/sam2.1/sam2.1_hiera_b+.yaml")
    state = torch.load(path, weights_only=True)["model"]
    model = load_official(path, config_for_official(state, image_size=SIZE))
    video = frames(20)
    ref = official_logits(predictor, video, [110, 120])
    assert_logits_close(refseg_logits(model, video, [110, 120]), ref)
    assert any(float((ref[0] - r).abs().max()) > 0.1 for r in ref[1:]), "the masks do not move: no tracking test"
    # with bfloat16 memories on both sides (the default), the same masks to bfloat16's rounding
    ours = refseg_logits(model, video, [110, 120], torch.bfloat16)
    ref = official_logits(predictor, video, [110, 120], torch.bfloat16)
    assert_logits_close(ours, ref, tol=2e-2)
    assert all(torch.equal(a > 0, b > 0) or float(((a > 0) ^ (b > 0)).float().mean()) < 1e-3
               for a, b in zip(ours, ref))


def test_sam2_0_tracking_over_12_frames_has_no_pointer_temporal_encoding(checkpoints):
    """SAM 2.0 adds no temporal encoding to object pointers and has no occlusion embedding."""
    predictor, path = checkpoints("configs/sam2/sam2_hiera_t.yaml")
    model = load_official(path, config_for_official(torch.load(path, weights_only=True)["model"], image_size=SIZE))
    assert not model.config.enable_temporal_pos_encoding_for_object_pointers
    video = frames(12)
    assert_logits_close(refseg_logits(model, video, [110, 120]), official_logits(predictor, video, [110, 120]))


@pytest.mark.parametrize("config_file", ["configs/sam2.1/sam2.1_hiera_b+.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml"])
def test_a_wrong_head_count_fails_parity(checkpoints, config_file):
    """The check is strong enough to see the bug it exists for: heads [1, 2, 4, 8] on base+
    (or [2, 4, 8, 16] on tiny) load without a key error and give other features."""
    predictor, path = checkpoints(config_file)
    size, version = CONFIGS[config_file]
    trunk = dict(HIERA_SIZES[size])
    width, heads = trunk["hidden_size"], 3 - trunk.pop("heads")  # 2 <-> 1
    trunk.update(embed_dim_per_stage=[width * 2 ** i for i in range(4)],
                 num_attention_heads_per_stage=[heads * 2 ** i for i in range(4)])
    wrong = load_official(path, build_config(trunk, image_size=SIZE, version=version))
    pixels = normalise_frames(torch.from_numpy(frames(1)), SIZE)
    with torch.inference_mode():
        diff = (wrong.encode_images(pixels).embed - predictor.forward_image(pixels)["backbone_fpn"][2]).abs().max()
    assert float(diff) > 100 * TOL


def test_a_jpeg_folder_of_other_size_gives_the_official_masks_from_decoding_on(checkpoints, tmp_path):
    """The whole path a user runs: JPEG frames of 180 x 320 read from a folder, decoded, resized
    (PIL's bicubic filter, as the official loader) and the masks resized back to 180 x 320."""
    from PIL import Image

    predictor, path = checkpoints("configs/sam2.1/sam2.1_hiera_t.yaml")
    model = load_official(path, config_for_official(torch.load(path, weights_only=True)["model"], image_size=SIZE))
    for t, frame in enumerate(frames(6)):
        Image.fromarray(frame).resize((320, 180), Image.Resampling.BILINEAR).save(tmp_path / f"{t:05d}.jpg", quality=90)
    video = np.stack(list(read_frames(tmp_path)))
    assert video.shape == (6, 180, 320, 3)
    ours = refseg_logits(model, video, [160, 80])
    assert ours[0].shape == (180, 320)
    assert_logits_close(ours, official_logits(predictor, tmp_path, [160, 80]))
