"""TinyViT, TinySAM's image trunk, as SAM-I2V runs it.

TinyViT (Wu et al., ECCV 2022) is a four-stage hybrid: a convolutional first stage of MBConv
blocks, then three stages of windowed self-attention whose blocks add a depthwise convolution
between attention and MLP. TinySAM (and MobileSAM before it) distil SAM's ViT-H into it, with two
changes for SAM: the last patch merging keeps stride 1, so the last two stages both run at
stride 16, and SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d, 256 channels) follows
the last stage. SAM-I2V (Mei et al., CVPR 2025) takes five maps from it (`TinyViT.forward`); its
temporal feature integrator (Sec. 3.2) reads the last three.

Parameter names and shapes are those of the official module (SAM-I2V's
`i2v/modeling/backbones/tiny_vit_sam.py`, checkpoint prefix `image_encoder.trunk_image.`), so
official weights load with `load_state_dict` once the prefix and `CLASSIFIER_KEYS` are removed.
What this implementation leaves out, none of which the SAM-I2V forward uses:

- the ImageNet classification head (`norm_head`, `head`): built by the official module and
  present in its checkpoints, never called by its forward; see `CLASSIFIER_KEYS`;
- stochastic depth (drop path) and dropout: SAM-I2V sets both rates to 0;
- the official attention's cached bias table (`ab`, refreshed on `.eval()`): the table is indexed
  on every call, which equals the official result whenever its cache is fresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Official state-dict keys of the classification head that SAM-I2V builds (num_classes=1000) and
# never runs; drop them before `TinyViT.load_state_dict`.
CLASSIFIER_KEYS = ("norm_head.weight", "norm_head.bias", "head.weight", "head.bias")


@dataclass(frozen=True)
class TinyViTConfig:
    """Sizes of a TinyViT trunk with a SAM neck; the argument names of the official constructor.

    Every per-stage tuple has four entries. Stage 0 is convolutional, so `num_heads[0]` and
    `window_sizes[0]` are not used (the official configs still give them).

    img_size:            input side S, a multiple of 16; inputs are [B, in_chans, S, S].
    in_chans:            input channels.
    embed_dims:          channels of the four stages.
    depths:              blocks per stage (at least one each).
    num_heads:           attention heads of stages 1-3; each divides its stage's channels.
    window_sizes:        attention window side of stages 1-3.
    mlp_ratio:           MLP hidden width / channels in the attention stages.
    mbconv_expand_ratio: MBConv hidden width / channels in stage 0.
    local_conv_size:     kernel of the depthwise convolution between attention and MLP (odd).
    out_chans:           channels of the neck output (SAM's 256).
    """

    img_size: int
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_sizes: tuple[int, int, int, int]
    in_chans: int = 3
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_chans: int = 256

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "window_sizes"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"TinyViT has four stages; {name} = {getattr(self, name)}")
        if self.img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16 (the trunk's stride), got {self.img_size}")
        if min(self.depths) < 1:
            raise ValueError(f"every stage needs at least one block, got depths {self.depths}")
        for stage in (1, 2, 3):
            if self.embed_dims[stage] % self.num_heads[stage]:
                raise ValueError(f"stage {stage}: {self.num_heads[stage]} heads do not divide "
                                 f"{self.embed_dims[stage]} channels")
        if self.local_conv_size % 2 == 0:
            raise ValueError(f"local_conv_size must be odd, got {self.local_conv_size}")

    @classmethod
    def tinysam(cls) -> TinyViTConfig:
        """The published TinySAM trunk that SAM-I2V's checkpoints hold (`i2v/configs/i2v-infer.yaml`):
        5.74 M parameters, 1024 px in, 256 x 64 x 64 out."""
        return cls(img_size=1024, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10),
                   window_sizes=(7, 7, 14, 7))


class ConvBN(nn.Module):
    """Convolution without bias followed by BatchNorm (the official `Conv2d_BN`; keys `c`, `bn`).

    [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """Two 3x3 stride-2 ConvBNs with GELU between: [B, C_in, S, S] -> [B, C0, S/4, S/4]."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block of stage 0: 1x1 expand, 3x3 depthwise, 1x1 project, each a ConvBN,
    GELU after the first two and after the residual sum. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + y)


class PatchMerging(nn.Module):
    """1x1 ConvBN to the next width, 3x3 depthwise ConvBN with the given stride, 1x1 ConvBN, GELU
    after the first two. [B, C, H, W] -> [B, C_out, H/stride, W/stride]."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def window_bias_index(window: int) -> Tensor:
    """[w*w, w*w] index into a window's bias table (the official `attention_bias_idxs`).

    Tokens are numbered row-major in the window. The table has one entry per absolute offset
    (|dy|, |dx|), numbered in the order the official code first meets them; it meets all of them
    while pairing token (0, 0) with every token, so (|dy|, |dx|) has number |dy| * w + |dx|.
    """
    rows = torch.arange(window).repeat_interleave(window)
    cols = torch.arange(window).repeat(window)
    return (rows[:, None] - rows[None, :]).abs() * window + (cols[:, None] - cols[None, :]).abs()


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one window, with a learned bias per head and
    absolute offset (the official `Attention` with attn_ratio 1).

    `qkv` holds, for each head in turn, its query, key and value columns (not all queries, then
    all keys, then all values). `attention_biases` is [heads, w*w]; see `window_bias_index`.
    [N, w*w, C] -> [N, w*w, C] (N = batch x windows).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", window_bias_index(window), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(n, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)  # each [N, heads, w*w, head_dim]
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + self.attention_biases[:, self.bias_index]
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU: [..., C] -> [..., C]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), a depthwise ConvBN over the whole map (no residual), then
    the MLP (residual). [B, H, W, C] -> [B, H, W, C], channels last.

    The map is cut into w x w windows after zero-padding its bottom and right edges to multiples
    of w. The padded tokens take part in attention (as keys and values: the official code masks
    nothing; a zero token is normalised to the LayerNorm bias) and are cropped afterwards. A map
    of exactly one window is attended to whole, which is the same computation.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)

    def windowed_attention(self, x: Tensor) -> Tensor:
        """Attention within each window of [B, H, W, C] -> [B, H, W, C]."""
        b, h, w, c = x.shape
        s = self.window
        padded = F.pad(x, (0, 0, 0, -w % s, 0, -h % s))
        rows, cols = padded.shape[1] // s, padded.shape[2] // s
        windows = padded.view(b, rows, s, cols, s, c).transpose(2, 3).reshape(b * rows * cols, s * s, c)
        out = self.attn(windows).view(b, rows, cols, s, s, c).transpose(2, 3).reshape(b, rows * s, cols * s, c)
        return out[:, :h, :w]


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks, then patch merging. [B, C0, H, W] -> [B, C1, H/2, W/2]."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging unless it is the last stage.

    [B, C, H, W] -> [B, C_out, H/stride, W/stride] (channels first; C_out = C and stride 1
    without merging).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size)
                                    for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [B, C, H, W] (SAM's, eps 1e-6), written as the official
    code computes it: (x - mean) / sqrt(biased variance + eps), then scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(1, keepdim=True)
        x = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT trunk with SAM's neck, returning the five maps SAM-I2V reads.

    Submodules (official names): `patch_embed`; `layers[0]` a `ConvStage`, `layers[1..3]`
    `AttentionStage`s (merging with stride 2 after stages 0 and 1, stride 1 after stage 2, none
    after stage 3); `neck`. The official module decides the stride-1 merging by the output width
    (320, 448 or 576: the published TinyViT sizes) and builds its last stage for the stride-16
    grid, so it runs only where that rule and this one (always stride 1 into the last stage)
    agree.
    """

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        self.config = config
        dims, depths = config.embed_dims, config.depths
        self.patch_embed = PatchEmbed(config.in_chans, dims[0])
        stages: list[nn.Module] = [ConvStage(dims[0], dims[1], depths[0], config.mbconv_expand_ratio)]
        for i in (1, 2, 3):
            merge = PatchMerging(dims[i], dims[i + 1], stride=2 if i == 1 else 1) if i < 3 else None
            stages.append(AttentionStage(dims[i], depths[i], config.num_heads[i], config.window_sizes[i],
                                         config.mlp_ratio, config.local_conv_size, merge))
        self.layers = nn.ModuleList(stages)
        out = config.out_chans
        self.neck = nn.Sequential(nn.Conv2d(dims[3], out, 1, bias=False), LayerNorm2d(out),
                                  nn.Conv2d(out, out, 3, padding=1, bias=False), LayerNorm2d(out))

    def forward(self, pixels: Tensor) -> list[Tensor]:
        """Encode normalised images.

        Args:
            pixels: [B, in_chans, S, S] with S = config.img_size.
        Returns:
            Five channels-first maps, as the official forward returns them (C = embed_dims):
            [0] patch embedding       [B, C0, S/4, S/4]
            [1] stage 0 after merging [B, C1, S/8, S/8]
            [2] stage 1 after merging [B, C2, S/16, S/16]
            [3] stage 2 after merging [B, C3, S/16, S/16] (stride-1 merging)
            [4] stage 3 through the neck [B, out_chans, S/16, S/16]: SAM's image embedding
            At the published size: 64x256x256, 128x128x128, 160x64x64, 320x64x64, 256x64x64.
        """
        size = self.config.img_size
        if pixels.shape[1:] != (self.config.in_chans, size, size):
            raise ValueError(f"TinyViT expects [B, {self.config.in_chans}, {size}, {size}] inputs, "
                             f"got {list(pixels.shape)}")
        maps = [self.patch_embed(pixels)]
        for stage in self.layers:
            maps.append(stage(maps[-1]))
        maps[-1] = self.neck(maps[-1])
        return maps
