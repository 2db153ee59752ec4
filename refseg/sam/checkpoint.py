"""Loading SAM 2 weights: Hugging Face ids, local model directories and official `.pt` files.

* A local directory or hub id holding a `transformers` SAM 2 video model (`config.json` +
  `model.safetensors`) loads through `Sam2VideoModel.from_pretrained`. Offline, a hub id fails
  with one message that says how to pass a local path instead.
* An official SAM 2 / SAM 2.1 checkpoint (`sam2.1_hiera_tiny.pt`, ...; a dict whose "model"
  entry is the state dict of `sam2.modeling.sam2_base.SAM2Base`) loads through
  `convert_official_state_dict`, which renames every key to the `transformers` layout. Any key
  left missing or unexpected is reported by name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.utils import logging as hf_logging

from refseg.errors import CheckpointError
from refseg.sam.config import HIERA_SIZES, sam2_config
from refseg.sam.model import Sam2
from refseg.shipped import SAM2 as SHIPPED_SAM2

log = logging.getLogger(__name__)


# Official name -> transformers name, applied in order (each rule at most once per key).
_RULES: list[tuple[str, str]] = [
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^image_encoder\.trunk\.patch_embed\.proj\.", "vision_encoder.backbone.patch_embed.projection."),
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
     "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.gamma$", ".scale"),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.norm(\d?)\.", r".layer_norm\1."),
]
# MLPs stored as `<prefix>.layers.<i>`: first -> proj_in, last -> proj_out, middle i -> layers.(i-1).
_MLP = re.compile(r"^(.*(?:\.mlp|_mlps\.\d+|_head|^object_pointer_proj))\.layers\.(\d+)\.(weight|bias)$")
# Mask downsampler: conv/norm/activation triples, then a final 1x1 conv.
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")
_POINT_EMBED = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")


def convert_official_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official SAM 2 state dict (`SAM2Base`) to the `transformers` layout.

    SAM 2's memory encoder has no output projection when its input width equals the memory
    width (an `nn.Identity`, so no key); the `transformers` module always projects, so an exact
    identity 1 x 1 convolution stands in for it."""
    state = dict(state)
    if "memory_encoder.pix_feat_proj.weight" in state and "memory_encoder.out_proj.weight" not in state:
        ref = state["memory_encoder.pix_feat_proj.weight"]
        width = ref.shape[0]
        state["memory_encoder.out_proj.weight"] = torch.eye(width, dtype=ref.dtype)[:, :, None, None]
        state["memory_encoder.out_proj.bias"] = torch.zeros(width, dtype=ref.dtype)
    out: dict[str, Tensor] = {}
    point_embeds: dict[int, Tensor] = {}
    downsampler = sorted({int(m.group(1)) for k in state if (m := _DOWNSAMPLER.match(k))})
    for key, value in state.items():
        if m := _POINT_EMBED.match(key):
            point_embeds[int(m.group(1))] = value
            continue
        if m := _DOWNSAMPLER.match(key):
            index, last = int(m.group(1)), downsampler[-1]
            part = "final_conv" if index == last else f"layers.{index // 3}.{'conv' if index % 3 == 0 else 'layer_norm'}"
            out[f"memory_encoder.mask_downsampler.{part}.{m.group(2)}"] = value
            continue
        new = key
        for pattern, repl in _RULES:
            new = re.sub(pattern, repl, new, count=1)
        out[new] = value
    depths: dict[str, int] = {}
    for key in out:
        if m := _MLP.match(key):
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    renamed: dict[str, Tensor] = {}
    for key, value in out.items():
        if m := _MLP.match(key):
            prefix, i, kind = m.group(1), int(m.group(2)), m.group(3)
            layer = "proj_in" if i == 0 else "proj_out" if i == depths[prefix] - 1 else f"layers.{i - 1}"
            key = f"{prefix}.{layer}.{kind}"
        renamed[key] = value
    if point_embeds:
        renamed["prompt_encoder.point_embed.weight"] = torch.cat([point_embeds[i] for i in sorted(point_embeds)])
    if "prompt_encoder.shared_embedding.positional_embedding" in renamed:
        renamed["shared_image_embedding.positional_embedding"] = renamed[
            "prompt_encoder.shared_embedding.positional_embedding"]
    return renamed


def config_for_official(state: dict[str, Tensor], image_size: int = 1024) -> Sam2VideoConfig:
    """Recognise the published size (tiny, small, base+, large) and version of an official state dict.

    Head counts and window sizes leave no trace in the weights (the attention projections have
    the same shapes for 1 or 2 heads), so they cannot be read off; the size can: the Hiera width
    and block count identify it (96/12 tiny, 96/16 small, 112/24 base+, 144/48 large), the shapes
    of the two positional-embedding tables must agree with it, and every other trunk setting
    (heads, windows, global-attention blocks) then comes from that size's official config. SAM 2.1
    is told from SAM 2 by its occlusion embedding (`no_obj_embed_spatial`). A checkpoint of any
    other size fails: pass its config explicitly.
    """
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in state:
        raise CheckpointError(f"not an official SAM 2 state dict: no {key!r}")
    width = state[key].shape[0]
    blocks = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    sizes = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}
    if (width, blocks) not in sizes:
        raise CheckpointError(f"unknown SAM 2 size (Hiera width {width}, {blocks} blocks): pass its config explicitly")
    size = sizes[(width, blocks)]
    trunk = HIERA_SIZES[size]
    expected = {"image_encoder.trunk.pos_embed": tuple(trunk["window_positional_embedding_background_size"]),
                "image_encoder.trunk.pos_embed_window": (trunk["window_size_per_stage"][0],) * 2}
    for name, grid in expected.items():
        if name in state and tuple(state[name].shape[-2:]) != grid:
            raise CheckpointError(f"{name} is {tuple(state[name].shape[-2:])}, not the {grid} of the official "
                                  f"{size} size: pass its config explicitly")
    version = "2.1" if "no_obj_embed_spatial" in state else "2"
    return sam2_config(size, image_size=image_size, version=version)


def load_state(model: Sam2, state: dict[str, Tensor], source: str) -> Sam2:
    """Load `state` into `model`, failing with the names of missing and unexpected keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append("shape mismatches " + ", ".join(
            f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` file; a missing, truncated or damaged file raises
    `CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type (and OSError, MemoryError) for a damaged file
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{path}: cannot read the weights, the file is damaged or truncated ({reason})") from err


def read_state_dict(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, Tensor]:
    """The state dict of a `.pt` / `.pth` file: the file itself or its "model" entry.
    `weights_only=False` also reads files that pickle other objects (training arguments)."""
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {err})") from err
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict (or a dict with a 'model' state dict)")
    return state


def load_official(path: str | os.PathLike[str], config: Sam2VideoConfig | None = None,
                  dtype: torch.dtype = torch.float32) -> Sam2:
    """Load an official SAM 2 `.pt` checkpoint (its config recognised from the weights if not given)."""
    state = read_state_dict(path)
    config = config if config is not None else config_for_official(state)
    return load_state(Sam2(config), convert_official_state_dict(state), str(path)).to(dtype).eval()


def _load_folder(path: Path, dtype: torch.dtype) -> Sam2:
    """A `transformers` SAM 2 video model folder, every weight present and used: a folder of
    another kind of model (a refseg SAMWISE folder, a SAM 1) or a damaged weights file is refused
    rather than filled with random weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a SAM 2 model folder needs config.json and model.safetensors")
    try:
        meta = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file}: not a readable JSON file ({err})") from None
    if not isinstance(meta, dict) or meta.get("model_type") != "sam2_video":
        kinds = ", ".join(k for k in meta if isinstance(meta.get(k), dict)) if isinstance(meta, dict) else ""
        kind = meta.get("model_type") if isinstance(meta, dict) and meta.get("model_type") else kinds or "no model type"
        raise CheckpointError(f"{path}: not a SAM 2 model folder (its config.json describes {kind}); "
                              "a refseg text model folder goes to --model")
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        raise CheckpointError(f"{path}: no model.safetensors beside config.json")
    for file in weights:
        if file.suffix == ".safetensors":
            read_safetensors(file)  # a damaged file is named here, not deep inside `transformers`
    previous, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the load report is replaced by the check below
    hf_logging.disable_progress_bar()
    try:
        hf, info = Sam2VideoModel.from_pretrained(path, dtype=dtype, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(previous)
        if bar:
            hf_logging.enable_progress_bar()
    wrong = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if wrong or info.get("error_msgs"):
        details = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {sorted(map(str, v))[0]})" for k, v in wrong.items())
        raise CheckpointError(f"{path}: its weights do not match its config.json: {details or info['error_msgs'][0]}")
    return Sam2(hf.config, hf).to(dtype).eval()


def load_sam2(source: str | os.PathLike[str], config: Sam2VideoConfig | None = None,
              dtype: torch.dtype = torch.float32) -> Sam2:
    """Load SAM 2 from a local directory, an official `.pt` / `.pth` file, a hub id, or the name
    of a small SAM 2 trained on SynthRef that refseg ships (`refseg.shipped.SAM2`: "synth", the one the
    embedded default reads; "synth-shape", trained to see shape too), as `dtype` (weights stored
    in another precision, such as the shipped float16 weights, are converted)."""
    if str(source) in SHIPPED_SAM2:
        folder, recipe = SHIPPED_SAM2[str(source)]
        if not folder.is_dir():
            raise CheckpointError(f"{source}: this installation ships no weights at {folder}; train them with {recipe}")
        source = folder
    path = Path(source)
    if path.is_file():
        if path.suffix not in (".pt", ".pth"):
            raise CheckpointError(f"{source}: expected an official SAM 2 .pt file or a model directory")
        return load_official(path, config, dtype)
    if path.is_dir():
        return _load_folder(path, dtype)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) or path.suffix in (".pt", ".pth"):
        raise CheckpointError(f"{source}: no such file or directory")
    try:
        hf = Sam2VideoModel.from_pretrained(str(source), dtype=dtype)
    except OSError as err:
        raise CheckpointError(
            f"cannot load SAM 2 {str(source)!r}: it is not a local path and the Hugging Face hub cannot be reached "
            f"(offline). Download it where there is internet, e.g. `hf download {source} --local-dir DIR`, "
            f"and pass DIR instead") from err
    return Sam2(hf.config, hf).to(dtype).eval()
