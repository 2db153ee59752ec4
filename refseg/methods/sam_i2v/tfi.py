"""SAM-I2V Temporal Feature Integrator (TFI; paper Sec. 3.2, Fig. 3).

An image SAM embeds each frame alone. The TFI adds motion: a temporal branch reads the last n
input frames (n = 5) through a 3-D stem and temporal convolution blocks; an integration branch
reads three maps of the image trunk; at each of the three taps the two exchange information
(spatial-to-temporal ST and temporal-to-spatial TS fusion) and the integration branch refines
its map. The last block's output replaces the image embedding for everything after it (memory
attention, memory encoder, the memory selector's frame similarity); the trunk itself is not
changed, the TFI runs beside it.

Per tap l = 1, 2, 3 with trunk map S_l (paper's notation; T_0 the stem output, R_0 = 0):
    T'_l = TemporalNet_l(T_{l-1})                                  (3 residual Conv3d loops)
    I'_l = Linear_l(S_l) + R_{l-1}                                 (I'_l = I_{l-1} + S_l)
    T_l  = T'_l with its last time step replaced by ST([I'_l, T'_l[:, :, -1]])
    U_l  = TS([I'_l, T'_l[:, :, -1]])                              (I_l = C2d(TS(I'_l, T'_l)))
    R_l  = C2d_l(U_l);  out_l = R_l + U_l
The output is out_3. As in the official code, both fusions read T'_l before ST updates it, and the
block output keeps the residual U_l that the paper's equation leaves out.

Module names follow the official `TFI` (`image_encoder.trunk_video.*`): `integration2temporal_nets`
is the paper's ST and `temporal2integration_nets` its TS. Only the temporal blocks are renamed
(`blocks.k.{norm,spatial,temporal}` for `lns.k`, `temporal_net.k.c_fc1_k`, `temporal_net.k.c_fc2_k`;
see `refseg.methods.sam_i2v.checkpoint`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.sam.tiny_vit import LayerNorm2d


def quick_gelu(x: Tensor) -> Tensor:
    """x * sigmoid(1.702 x), the activation of the temporal blocks."""
    return x * torch.sigmoid(1.702 * x)


class TemporalBlock(nn.Module):
    """One loop of the temporal net: out = QuickGELU(x + Conv_t(QuickGELU(Conv_s(LN_c(x))))).

    Conv_s is a (1, 3, 3) convolution (space), Conv_t a (k, 1, 1) one (time); LN_c normalises
    the channels of every (time, y, x) position. x: [B, C, n, h, w] -> same.
    """

    def __init__(self, dim: int, kernel: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.spatial = nn.Conv3d(dim, hidden, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(hidden, dim, kernel_size=(kernel, 1, 1), padding=(kernel // 2, 0, 0))

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        return quick_gelu(x + self.temporal(quick_gelu(self.spatial(normed))))


class TemporalNet(nn.Module):
    """`loops` temporal blocks in sequence (the paper's T^(i) = T^(i-1) + C3d^(i)(T^(i-1)))."""

    def __init__(self, dim: int, kernel: int, mlp_ratio: float, loops: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TemporalBlock(dim, kernel, mlp_ratio) for _ in range(loops)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _fuse(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1), LayerNorm2d(out_dim), nn.GELU())


class SpatialToTemporal(nn.Module):
    """ST: the integration map and the temporal branch's last time step, fused into a new last
    time step. spatial [B, Ci, h, w], temporal [B, Ct, n, h, w] -> [B, Ct, n, h, w]."""

    def __init__(self, integration_dim: int, temporal_dim: int) -> None:
        super().__init__()
        self.fuse = _fuse(integration_dim + temporal_dim, temporal_dim)

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        last = self.fuse(torch.cat([spatial, temporal[:, :, -1]], dim=1))
        return torch.cat([temporal[:, :, :-1], last[:, :, None]], dim=2)


class TemporalToSpatial(nn.Module):
    """TS: the integration map and the temporal branch's last time step, fused into the
    integration width. spatial [B, Ci, h, w], temporal [B, Ct, n, h, w] -> [B, Ci, h, w]."""

    def __init__(self, integration_dim: int, temporal_dim: int) -> None:
        super().__init__()
        self.fuse = _fuse(integration_dim + temporal_dim, integration_dim)

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        return self.fuse(torch.cat([spatial, temporal[:, :, -1]], dim=1))


class IntegrationNet(nn.Module):
    """C2d: 3x3 convolution, LayerNorm2d, GELU on [B, Ci, h, w]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), LayerNorm2d(dim), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class TemporalFeatureIntegrator(nn.Module):
    """The TFI of `SamI2VConfig` (`tapped_dims`: channels of the three tapped trunk maps)."""

    def __init__(self, config: SamI2VConfig) -> None:
        super().__init__()
        c = config
        taps = len(c.tapped_dims)
        self.window = c.window
        self.temporal_stem = nn.Conv3d(3, c.temporal_dim, kernel_size=(c.temporal_patch, c.spatial_patch, c.spatial_patch),
                                       stride=(1, c.spatial_patch, c.spatial_patch), padding=(c.temporal_patch // 2, 0, 0))
        self.input_linears = nn.ModuleList([nn.Conv2d(d, c.integration_dim, 1) for d in c.tapped_dims])
        self.integration2temporal_nets = nn.ModuleList(
            [SpatialToTemporal(c.integration_dim, c.temporal_dim) for _ in range(taps)])
        self.temporal2integration_nets = nn.ModuleList(
            [TemporalToSpatial(c.integration_dim, c.temporal_dim) for _ in range(taps)])
        self.temporal_nets = nn.ModuleList([TemporalNet(c.temporal_dim, c.temporal_kernel, c.temporal_mlp_ratio,
                                                        c.temporal_loops) for _ in range(taps)])
        self.integration_nets = nn.ModuleList([IntegrationNet(c.integration_dim) for _ in range(taps)])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: trunc-normal(0.02) convolution weights, zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, taps: list[Tensor], window: Tensor) -> Tensor:
        """Spatio-temporal embedding of T frames.

        Args:
            taps: the tapped trunk maps, each [T, c_l, h_l, w_l]; maps not at the stem's grid
                h x w are resized to it (bilinear, as the official code resizes to 64 x 64).
            window: [T, n, 3, S, S] model inputs of each frame's window, oldest first.
        Returns:
            [T, integration_dim, h, w] with h = S / spatial_patch: the new image embedding.
        """
        temporal = self.temporal_stem(window.transpose(1, 2))  # [T, Ct, n, h, w]
        size = temporal.shape[-2:]
        taps = [x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                for x in taps]
        residual: Tensor | float = 0.0
        out = taps[-1]
        for l, tap in enumerate(taps):
            temporal = self.temporal_nets[l](temporal)
            mid = self.input_linears[l](tap) + residual  # I'_l
            fused = self.temporal2integration_nets[l](mid, temporal)  # U_l, from T'_l
            temporal = self.integration2temporal_nets[l](mid, temporal)  # T_l
            residual = self.integration_nets[l](fused)  # R_l
            out = residual + fused
        return out
