"""The prompt path: clicks, boxes, masks and extra sparse embeddings."""

from __future__ import annotations

import pytest
import torch

from refseg.sam.prompt_encoder import POSITIVE, PointPrompt, embed_prompts


def test_extra_embeddings_follow_the_click_tokens(tiny_model):
    encoder = tiny_model.prompt_encoder
    points = PointPrompt(torch.tensor([[[10.0, 20.0], [50.0, 60.0]]]), torch.tensor([[POSITIVE, 0]]))
    extra = torch.randn(1, 3, 256)
    sparse, dense = embed_prompts(encoder, 1, points=points, extra=extra)
    alone, _ = embed_prompts(encoder, 1, points=points)
    assert sparse.shape == (1, 1, 2 + 1 + 3, 256)  # 2 clicks + SAM's padding point + 3 extra
    assert torch.equal(sparse[:, :, :3], alone)
    assert torch.equal(sparse[0, 0, 3:], extra[0])
    assert dense.shape == (1, 256, 8, 8)


def test_extra_embeddings_alone_need_no_padding_point(tiny_model):
    extra = torch.randn(2, 4, 256)
    sparse, dense = embed_prompts(tiny_model.prompt_encoder, 2, extra=extra)
    assert torch.equal(sparse[:, 0], extra)
    assert dense.shape == (2, 256, 8, 8)
    assert torch.equal(dense[0, :, 0, 0], tiny_model.prompt_encoder.no_mask_embed.weight[0])


def test_no_prompt_is_the_not_a_point_token(tiny_model):
    encoder = tiny_model.prompt_encoder
    sparse, _ = embed_prompts(encoder, 1)
    # SAM 2's tracking call: one "not a point" click, plus the encoder's own padding point
    assert sparse.shape == (1, 1, 2, 256)
    assert torch.equal(sparse[0, 0, 0], encoder.not_a_point_embed.weight[0])
    assert torch.equal(sparse[0, 0, 1], encoder.not_a_point_embed.weight[0])


def test_mask_prompt_is_resized_to_the_dense_grid(tiny_model):
    encoder = tiny_model.prompt_encoder
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 32:96, 32:96] = 10.0
    _, dense = embed_prompts(encoder, 1, mask=mask)
    _, direct = embed_prompts(encoder, 1, mask=torch.nn.functional.interpolate(
        mask, size=(32, 32), mode="bilinear", align_corners=False, antialias=True))
    assert torch.equal(dense, direct)
    _, empty = embed_prompts(encoder, 1)
    assert not torch.allclose(dense, empty)


def test_a_fresh_model_encodes_clicks_like_the_image_grid():
    """A click's positional encoding must match the image encoding of the cell it falls in (SAM's
    one Gaussian table), else a model trained from scratch cannot locate its clicks."""
    from refseg.sam import Sam2, tiny_test_config

    torch.manual_seed(0)
    model = Sam2(tiny_test_config(image_size=128))
    grid = model.image_positional_embeddings()[0]  # [C, h, w]
    h, w = grid.shape[1:]
    size = model.image_size
    for cell_y, cell_x in [(0, 0), (3, 5), (7, 2)]:
        # the pixel at the centre of the cell; SAM shifts clicks by half a pixel
        x, y = (cell_x + 0.5) * size / w - 0.5, (cell_y + 0.5) * size / h - 0.5
        coords = torch.tensor([[[[x, y]]]])
        code = model.prompt_encoder.shared_embedding(coords + 0.5, (size, size))[0, 0, 0]  # [C]
        assert torch.allclose(code, grid[:, cell_y, cell_x], atol=1e-5)
        similarity = torch.einsum("c,chw->hw", code, grid)
        assert divmod(int(similarity.argmax()), w) == (cell_y, cell_x)


@pytest.mark.parametrize("image_size", [128, 256])
def test_a_fresh_model_reads_memory_at_the_same_position(image_size):
    """With content-free inputs, the memory cross-attention of a fresh model (queries and keys
    rotated by the engine's RoPE tables) attends from every cell to that cell and its neighbours."""
    from transformers.models.sam2_video.modeling_sam2_video import rotate_pairwise

    from refseg.sam import Sam2, tiny_test_config
    from refseg.sam.memory import memory_rope

    torch.manual_seed(0)
    model = Sam2(tiny_test_config(image_size=image_size))
    cos, sin = (t.reshape(-1, t.shape[-1]) for t in memory_rope(model))  # [h*w, head_dim]
    side = image_size // 16
    cells = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    near = (cells[:, None] - cells[None]).abs().amax(-1) <= 1  # [h*w, h*w] same cell or a neighbour
    for layer in model.memory_attention.layers:
        cross = layer.cross_attn_image
        with torch.no_grad():
            q = cross.q_proj(torch.zeros(cross.q_proj.in_features)).expand_as(cos)
            k = cross.k_proj(torch.zeros(cross.k_proj.in_features)).expand_as(cos)
        q, k = q * cos + rotate_pairwise(q) * sin, k * cos + rotate_pairwise(k) * sin
        attention = (q @ k.T / cos.shape[-1] ** 0.5).softmax(-1)
        assert torch.equal(attention.argmax(-1), torch.arange(side * side))
        assert float((attention * near).sum(-1).min()) > 0.9
