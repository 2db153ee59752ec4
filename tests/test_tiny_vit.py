"""refseg's TinyViT against the official one (SAM-I2V's tiny_vit_sam.py), float32 on CPU, one thread.

The fixture (tests/fixtures/tiny_vit_official, made by its make_fixture.py from the official code)
holds a small official TinyViT's state dict, two 64x64 inputs and the five maps the official
forward returned for them in eval and in training mode. refseg's TinyViT loads that state dict
strictly (less the unused classification head) and must reproduce every map to 1e-5.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg.sam.tiny_vit import CLASSIFIER_KEYS, TinyViT, TinyViTConfig, window_bias_index

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_vit_official" / "tiny_vit_official.npz"
ATOL = 1e-5
# Counted from the official module built with i2v/configs/i2v-infer.yaml's trunk_image arguments
# (make_fixture.py prints both): 6,065,532 parameters, of which the classification head
# (norm_head: 2 x 320, head: 320 x 1000 + 1000) is 321,640.
OFFICIAL_PUBLISHED_PARAMETERS = 6_065_532
OFFICIAL_CLASSIFIER_PARAMETERS = 321_640


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config_of(fixture: dict[str, np.ndarray]) -> TinyViTConfig:
    """The refseg config for the official constructor arguments the fixture was made with."""
    official = json.loads(str(fixture["config"]))
    assert official["drop_rate"] == 0 and official["drop_path_rate"] == 0
    fields = {f.name for f in dataclasses.fields(TinyViTConfig)}
    return TinyViTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in official.items() if k in fields})


def official_state(fixture: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The official state dict: float32 tensors, int8 codes times their power of two, as stored."""
    exponents = json.loads(str(fixture["exponents"]))
    state = {k.removeprefix("state/"): torch.from_numpy(v) for k, v in fixture.items() if k.startswith("state/")}
    for name, exponent in exponents.items():
        state[name] = torch.from_numpy(fixture[f"codes/{name}"]).float() * 2.0**exponent
    return state


def load_model(fixture: dict[str, np.ndarray], config: TinyViTConfig | None = None) -> TinyViT:
    state = official_state(fixture)
    assert set(CLASSIFIER_KEYS) <= set(state)
    model = TinyViT(config or config_of(fixture))
    model.load_state_dict({k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}, strict=True)
    return model


def pixels_of(fixture: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(fixture["pixels"]).float() * 2.0 ** int(fixture["pixels_exponent"])


def assert_maps_match(maps: list[torch.Tensor], fixture: dict[str, np.ndarray], mode: str) -> None:
    expected = [torch.from_numpy(fixture[f"{mode}/{i}"]) for i in range(5)]
    assert [tuple(m.shape) for m in maps] == [tuple(e.shape) for e in expected]
    for i, (got, want) in enumerate(zip(maps, expected)):
        error = (got.detach() - want).abs().max().item()
        assert error <= ATOL, f"{mode} map {i}: max |refseg - official| = {error:.2e}"


def test_fixture_exercises_padded_and_whole_windows(fixture: dict[str, np.ndarray]) -> None:
    config = config_of(fixture)
    grids = {1: config.img_size // 8, 2: config.img_size // 16, 3: config.img_size // 16}
    padded = [s for s, g in grids.items() if g % config.window_sizes[s]]
    whole = [s for s, g in grids.items() if g == config.window_sizes[s]]
    assert padded and whole
    assert config.embed_dims[3] == 320  # the official stride-1 merging needs 320, 448 or 576


def test_matches_official_eval(fixture: dict[str, np.ndarray]) -> None:
    model = load_model(fixture).eval()
    with torch.no_grad():
        maps = model(pixels_of(fixture))
    assert_maps_match(maps, fixture, "eval")


def test_matches_official_training(fixture: dict[str, np.ndarray]) -> None:
    """Training mode (BatchNorm on batch statistics); every parameter gets a gradient."""
    model = load_model(fixture).train()
    maps = model(pixels_of(fixture))
    assert_maps_match(maps, fixture, "train")
    sum(m.square().mean() for m in maps).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_published_size() -> None:
    config = TinyViTConfig.tinysam()
    with torch.device("meta"):
        model = TinyViT(config)
        maps = model(torch.empty(1, 3, 1024, 1024))
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PUBLISHED_PARAMETERS - OFFICIAL_CLASSIFIER_PARAMETERS
    assert [tuple(m.shape) for m in maps] == [(1, 64, 256, 256), (1, 128, 128, 128), (1, 160, 64, 64),
                                              (1, 320, 64, 64), (1, 256, 64, 64)]


@pytest.mark.parametrize("change", [
    dict(num_heads=(1, 2, 2, 5)),     # stage 2: 2 heads instead of 4
    dict(num_heads=(1, 2, 4, 4)),     # stage 3: 4 heads instead of 5
    dict(window_sizes=(7, 4, 4, 3)),  # stage 1: windows of 4 instead of 3
    dict(window_sizes=(7, 3, 4, 4)),  # stage 3: windows of 4 instead of 3
    dict(mlp_ratio=4.0),
    dict(depths=(1, 1, 1, 1)),
])
def test_wrong_size_does_not_load(fixture: dict[str, np.ndarray], change: dict) -> None:
    with pytest.raises(RuntimeError):
        load_model(fixture, dataclasses.replace(config_of(fixture), **change))


@pytest.mark.parametrize("window", [1, 2, 7, 14])
def test_bias_index_is_official_first_seen_order(window: int) -> None:
    """The official numbering, written out: offsets numbered as first met over all token pairs."""
    points = list(itertools.product(range(window), range(window)))
    numbers: dict[tuple[int, int], int] = {}
    index = [[numbers.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(numbers)) for b in points] for a in points]
    assert torch.equal(window_bias_index(window), torch.tensor(index))


def test_rejects_other_input_sizes(fixture: dict[str, np.ndarray]) -> None:
    model = TinyViT(config_of(fixture))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 80, 80))
    with pytest.raises(ValueError):
        dataclasses.replace(config_of(fixture), img_size=72)
