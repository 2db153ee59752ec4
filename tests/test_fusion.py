"""BEiT-3 (the EVF-SAM early-fusion encoder) against a naive computation, and its official layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from refseg.encoders.fusion import Beit3, Beit3Config, beit3_config_from_state, convert_official_beit3, load_beit3_weights

TINY = Beit3Config(hidden_size=32, layers=2, heads=4, ffn_size=48, vocab_size=50, image_size=32, patch_size=16,
                   max_text_positions=12)


def tiny_beit3(seed: int = 0) -> Beit3:
    torch.manual_seed(seed)
    model = Beit3(TINY).eval()
    with torch.no_grad():  # random norms and biases too, so a swapped expert shows
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def naive(model: Beit3, x: torch.Tensor, expert_of: list[str], padding: torch.Tensor | None) -> torch.Tensor:
    """Token by token: each position uses the expert of its modality; attention over all keys."""
    def apply(module, rows):  # module: a Multiway; rows: [N, C] -> per-position expert
        return torch.stack([getattr(module, e)(r) for e, r in zip(expert_of, rows)])

    for layer in model.layers:
        out = []
        for b in range(x.shape[0]):
            h = apply(layer.self_attn_layer_norm, x[b])
            q, k, v = apply(layer.q_proj, h), apply(layer.k_proj, h), apply(layer.v_proj, h)
            d = q.shape[1] // layer.heads
            heads = []
            for i in range(layer.heads):
                s = q[:, i * d:(i + 1) * d] @ k[:, i * d:(i + 1) * d].T / d**0.5
                if padding is not None:
                    s = s.masked_fill(padding[b][None], float("-inf"))
                heads.append(s.softmax(-1) @ v[:, i * d:(i + 1) * d])
            y = x[b] + apply(layer.out_proj, apply(layer.inner_attn_ln, torch.cat(heads, 1)))
            g = apply(layer.final_layer_norm, y)
            out.append(y + apply(layer.fc2, apply(layer.ffn_layernorm, F.gelu(apply(layer.fc1, g)))))
        x = torch.stack(out)
    return torch.stack([apply(model.layer_norm, row) for row in x])


def embed(model: Beit3, pixels=None, ids=None):
    parts = []
    if pixels is not None:
        patches = model.patch_embed(pixels).flatten(2).transpose(1, 2)
        image = torch.cat([model.cls_token.expand(len(pixels), -1, -1), patches], 1)
        parts.append(image + model.vision_positions.weight[2:2 + image.shape[1]])
    if ids is not None:
        parts.append(model.text_embed(ids) + model.text_positions.weight[2:2 + ids.shape[1]])
    return torch.cat(parts, 1)


@torch.no_grad()
def test_text_only_image_only_and_fused_paths_equal_the_naive_computation():
    model = tiny_beit3()
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, 50, (2, 5))
    text, split = model(ids=ids)
    assert split == 0
    assert torch.allclose(text, naive(model, embed(model, ids=ids), ["language"] * 5, None), atol=1e-5)
    image, split = model(pixels=pixels)
    assert split == 5  # [CLS] + 4 patches
    assert torch.allclose(image, naive(model, embed(model, pixels=pixels), ["vision"] * 5, None), atol=1e-5)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    fused, split = model(pixels=pixels, ids=ids, text_padding=padding)
    x = embed(model, pixels, ids) * torch.cat([torch.ones(2, 5), (~padding).float()], 1)[..., None]
    keys = torch.cat([torch.zeros(2, 5, dtype=torch.bool), padding], 1)
    expected = naive(model, x, ["vision"] * 5 + ["language"] * 5, keys)
    assert torch.allclose(fused, expected, atol=1e-5)


@torch.no_grad()
def test_fusion_mixes_modalities():
    model = tiny_beit3()
    pixels = torch.randn(1, 3, 32, 32)
    a, _ = model(pixels=pixels, ids=torch.tensor([[1, 2, 3]]))
    b, _ = model(pixels=pixels, ids=torch.tensor([[1, 7, 3]]))
    assert not torch.allclose(a[:, 0], b[:, 0])  # the image [CLS] depends on the text
    alone, _ = model(pixels=pixels)
    assert not torch.allclose(a[:, :5], alone)
    # padding is invisible: an extra padded token changes nothing for the others
    c, _ = model(pixels=pixels, ids=torch.tensor([[1, 2, 3, 9]]), text_padding=torch.tensor([[False] * 3 + [True]]))
    assert torch.allclose(c[:, :8], a, atol=1e-5)


def official_state(model: Beit3) -> dict[str, torch.Tensor]:
    """`model`'s weights under torchscale's names, as EVF-SAM stores them."""
    out = {}
    for name, value in model.state_dict().items():
        expert = {"vision": "A", "language": "B"}
        if name == "vision_positions.weight":
            key = "encoder.embed_positions.A.weight"
        elif name == "text_positions.weight":
            key = "encoder.embed_positions.B.weight"
        elif name.startswith("patch_embed."):
            key = "vision_embed.proj." + name.removeprefix("patch_embed.")
        elif name == "cls_token":
            key = "vision_embed.cls_token"
        elif name.startswith("layer_norm."):
            _, e, p = name.split(".")
            key = f"encoder.layer_norm.{expert[e]}.{p}"
        elif name.startswith("layers."):
            _, i, part, e, p = name.split(".")
            if part in ("fc1", "fc2", "ffn_layernorm"):
                key = f"encoder.layers.{i}.ffn.{expert[e]}.{part}.{p}"
            elif part in ("q_proj", "k_proj", "v_proj", "out_proj", "inner_attn_ln"):
                key = f"encoder.layers.{i}.self_attn.{part}.{expert[e]}.{p}"
            else:
                key = f"encoder.layers.{i}.{part}.{expert[e]}.{p}"
        else:
            key = name
        out["mm_extractor.beit3." + key] = value
    out["mm_extractor.beit3.vision_embed.mask_token"] = torch.zeros(1, 1, 32)
    return out


def test_official_layout_round_trip():
    model = tiny_beit3()
    state = {**official_state(model), "visual_model.no_mem_embed": torch.zeros(1)}
    converted = convert_official_beit3(state, prefix="mm_extractor.beit3.")
    assert set(converted) == set(model.state_dict())
    config = beit3_config_from_state(converted, head_size=8)
    assert (config.hidden_size, config.layers, config.ffn_size, config.image_size) == (32, 2, 48, 32)
    loaded = Beit3(config)
    loaded.load_state_dict(converted, strict=True)
    ids = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(loaded(ids=ids)[0], model(ids=ids)[0])
    with pytest.raises(ValueError, match="encoder.layers.0.gate"):
        convert_official_beit3({"mm_extractor.beit3.encoder.layers.0.gate": torch.zeros(1)}, "mm_extractor.beit3.")


def test_a_fresh_encoder_starts_from_content_not_positions():
    """Trained from scratch, a token must start as mostly its content: with position tables at
    N(0, 1) a SynthRef patch was 8x more position than pixels, and training learned to ignore
    the image."""
    torch.manual_seed(0)
    config = Beit3Config(hidden_size=384, layers=1, heads=6, ffn_size=64, vocab_size=100, image_size=64)
    model = Beit3(config).requires_grad_(False)
    pixels = torch.rand(4, 3, 64, 64) * 2 - 1
    content = model.patch_embed(pixels).flatten(2).transpose(1, 2).norm(dim=-1).mean()
    positions = model.vision_positions.weight.norm(dim=-1).mean()
    assert content > 5 * positions
    assert all(float(m.bias.abs().max()) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_a_published_beit3_checkpoint_file_loads_as_pretrained_weights(tmp_path):
    model = tiny_beit3(seed=1)
    published = {"beit3." + k.removeprefix("mm_extractor.beit3."): v for k, v in official_state(model).items()}
    torch.save({"model": published}, tmp_path / "beit3.pth")
    state = load_beit3_weights(tmp_path / "beit3.pth", model.config)
    loaded = Beit3(model.config)
    loaded.load_state_dict(state, strict=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="has layers 2, the config asks for 3"):
        load_beit3_weights(tmp_path / "beit3.pth", dataclasses.replace(model.config, layers=3))
