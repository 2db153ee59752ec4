"""Sizes and switches of SAM-I2V's upgrader modules (defaults: the published model,
`i2v/configs/i2v-infer.yaml` of the official code)."""

from __future__ import annotations

from dataclasses import dataclass

SELECTIONS = ("similarity", "uniform", "consecutive")
MPG_MODES = ("masked", "unmasked", "none")


@dataclass(frozen=True)
class SamI2VConfig:
    """SAM-I2V's modules around an image SAM.

    TFI (Sec. 3.2):
        tfi: run the TFI (False: the image SAM's own embedding, the ablation base).
        window: n, input frames the TFI reads per frame (the frame and the n - 1 before it).
        tapped_dims: channels of the three trunk maps the TFI reads (TinyViT: 160, 320 and the
            256 of the neck; a Hiera trunk: stage 3, stage 4 and the 256 of the FPN).
        temporal_dim, temporal_patch, spatial_patch: the 3-D stem (Conv3d 3 -> temporal_dim,
            kernel temporal_patch x spatial_patch^2, stride 1 x spatial_patch^2); spatial_patch
            must be the image SAM's stride (16), so the stem's grid is the embedding's.
        temporal_kernel, temporal_mlp_ratio, temporal_loops: the temporal blocks.
        integration_dim: width of the integration branch (the embedding's 256).
    MSA (Sec. 3.3):
        selection: how unprompted memories are chosen at inference: "similarity" (softmax over
            cosine similarity, the paper), "uniform" (the same pools, uniform sampling: the
            Tab. 5 ablation) or "consecutive" (SAM 2's last N - 1 frames: the ablation base
            and what training always uses, as the official training code does).
        global_pool, global_picks: frames [t - local_pool - global_pool, t - local_pool) and how
            many are drawn from them; local_pool, local_picks: frames [t - local_pool, t).
    MPG (Sec. 3.4):
        mpg: "masked" (cross-attention masked to foreground memory, Eq. 1-3), "unmasked" (the
            Tab. 6 ablation) or "none" (no memory prompts).
        num_queries: g, learned queries (memory prompt tokens); mpg_dropout.
    """

    tfi: bool = True
    window: int = 5
    tapped_dims: tuple[int, int, int] = (160, 320, 256)
    temporal_dim: int = 96
    temporal_patch: int = 5
    spatial_patch: int = 16
    temporal_kernel: int = 3
    temporal_mlp_ratio: float = 1.0
    temporal_loops: int = 3
    integration_dim: int = 256
    selection: str = "similarity"
    global_pool: int = 16
    global_picks: int = 4
    local_pool: int = 4
    local_picks: int = 2
    mpg: str = "masked"
    num_queries: int = 3
    mpg_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.mpg not in MPG_MODES:
            raise ValueError(f"mpg must be one of {', '.join(MPG_MODES)}, got {self.mpg!r}")
        if len(self.tapped_dims) != 3:
            raise ValueError(f"tapped_dims: the TFI reads three trunk maps, got {list(self.tapped_dims)}")
        if self.window < 1 or self.num_queries < 1:
            raise ValueError(f"window and num_queries must be >= 1, got {self.window} and {self.num_queries}")
        for name in ("global_pool", "global_picks", "local_pool", "local_picks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def keep_recent(self) -> int:
        """K, unprompted memories the bank keeps per object for the selector (20 published)."""
        return self.global_pool + self.local_pool if self.selection != "consecutive" else 0
