"""Training configs: YAML files mapped onto typed dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from refseg.errors import ConfigError
from refseg.io.atomic import atomic_file
from refseg.methods.evf_sam import EvfConfig
from refseg.methods.glus.model import GlusSpec
from refseg.methods.sam2_love.model import LoveConfig
from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.methods.samwise.model import SamwiseConfig
from refseg.train.config_file import read_config_file


@dataclass
class ModelConfig:
    """sam2: "tiny-test" (random tiny model), "synth-small" (the small SAM 2 trained on SynthRef,
    random init), a published size (tiny, small, base_plus, large; random init), or a SAM 2
    checkpoint to start from (model directory or official .pt). `local_memory_readout`
    re-initialises the memory attention's readout after loading (`Sam2.init_local_memory_readout`):
    for a checkpoint whose memory attention was never trained (image-only stage 1). `init`: the
    `final/` folder of an earlier run of the same task whose weights start this one (a stage-2
    run from its stage 1; the names must match exactly), or a shipped model folder such as
    refseg/weights/samwise_synth, whose SAM 2 (`sam2_source`) must be `sam2`, or `init_sam2` when
    its modules are to start on another SAM 2 of the same sizes (a warm start when the SAM 2 under
    a text model is replaced: the default's adapters, trained on `synth`, under `synth-shape`,
    with `sam2: synth-shape, init_sam2: synth`). `encoder_from`: a
    SAM 2 checkpoint of the same sizes whose image encoder (`vision_encoder.*`) replaces the loaded
    one's, e.g. an image model trained further on images under a tracking model's memory modules."""

    sam2: str = "tiny-test"
    image_size: int = 128
    local_memory_readout: bool = False
    init: str | None = None
    init_sam2: str | None = None
    encoder_from: str | None = None
    sam1: str | None = None  # evf, sam_i2v: a SAM (v1) image model (SamModel folder or official .pth) instead
    memory_layers: int = 4  # sam_i2v: memory-attention layers of the upgraded image SAM


@dataclass
class DataConfig:
    """SynthRef (`source: synthref`, generated on the fly) or a dataset in one of
    `refseg.data.formats.FORMATS` read from `root`."""

    source: str = "synthref"
    root: str | None = None
    split: str = "train"
    seed: int = 0
    count: int | None = None
    clip_len: int = 8
    size: int = 128
    image: bool = False  # SynthRef: still single-frame scenes (referring image segmentation)
    audio_visual: bool = False  # SynthRef: the Ref-AVS layout's scenes (`synth.AVS_SCENARIOS`)
    # SynthRef: colour words beyond the split's own (names of `synth.EXTRA_COLOURS`), e.g. [black, brown, pink]
    extra_colours: list[str] = field(default_factory=list)
    # SynthRef: only the scenes built around this phenomenon (e.g. sound_sync); `count` then counts those
    scenario: str | None = None
    # EVF-SAM: keep the frozen image encoder's features of every distinct training image in memory
    # (float16, about 0.5 MB per image at 256 px) and encode each once; GLUS: the read-out stage
    # (`refseg.train.glus`: everything up to the [SEG] state held fixed, each pair's state and each
    # image's SAM 2 features kept). Crops and colour jitter are then off (they would change the
    # image), horizontal flips stay.
    cache_features: bool = False
    # expression tasks (samwise, evf): a batch is drawn in groups of up to this many expressions
    # that share one clip and its augmentation (`ClipSampler.sample_group`); 1: independent draws
    expressions_per_clip: int = 1
    # expression tasks: phenomenon -> draw weight (`ClipSampler` weights), e.g. {null: 4}: an
    # expression that exercises it is drawn four times as often; empty: uniform over expressions
    phenomenon_weights: dict[str, float] = field(default_factory=dict)
    # video tasks: frames between a clip's frames, drawn per clip from [lo, hi] (`ClipSampler` stride),
    # e.g. [1, 4]: an 8-frame clip spans up to 29 frames (SAMWISE: memory from before a late start)
    frame_stride: tuple[int, int] = (1, 1)
    # SAM2-LOVE: the token chain runs over only the first k of each video's chain frames (every
    # audio window still in its context); 1 with only `loss.ground` on: the grounding stage
    # (configs/sam2_love_synth_ground.yaml). None: the whole chain
    chain_frames: int | None = None
    # SAM2-LOVE: a folder where the kept frozen features are written once and read back by every
    # later run over the same videos and frozen encoders (one file per such pair, named by a hash
    # of both: a grounding stage, the recipe after it and each ablation row share one pass)
    feature_store: str | None = None


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine, linear, constant (after warm-up)
    warmup_steps: int = 0
    grad_clip: float = 1.0  # 0: no clipping
    accumulation: int = 1  # micro-batches per optimizer step


@dataclass
class LossConfig:
    focal: float = 20.0
    structure: float = 20.0  # SAM-I2V's mask loss (boundary-weighted BCE + weighted IoU)
    bce: float = 1.0  # EVF-SAM's mask loss (with dice)
    dice: float = 1.0
    iou: float = 1.0
    object: float = 1.0
    cme: float = 1.0  # SAMWISE's Conditional Memory Encoder decision
    mlm: float = 1.0  # BEiT-3 pretraining: masked language modelling
    box: float = 5.0  # BEiT-3 pretraining: L1 on the referred box
    patch: float = 1.0  # BEiT-3 pretraining: each patch's covered fraction
    ce: float = 1.0  # GLUS: cross-entropy on the assistant's tokens
    contrastive: float = 0.1  # GLUS: object contrastive loss
    score: float = 1.0  # GLUS key-frame selector: L1 on the frame's score
    # SAM2-LOVE: pull the prompt token toward SAM 2's embedding of a positive click at the target's
    # frame-0 centroid (refseg's training aid; 0: the paper's loss, Eq. 5)
    place: float = 0.0
    # SAM2-LOVE: frame 0's patch outputs predict the target's cover of each patch, and the [seg]
    # leaving frame 0 and the final [seg] point at the patches that hold it (refseg's aid, 0: off)
    ground: float = 0.0
    # SAM 2 image training: each prompted object's mean feature classifies its colour, shape, size
    # and texture (`refseg.train.attributes`; SynthRef samples only; 0: off, SAM's loss alone)
    attributes: float = 0.0


@dataclass
class PromptConfig:
    """First-frame prompt mix and corrective clicks (SAM 2 training recipe). Image training
    (`sam2_image`) draws click : box and runs `rounds` decoder passes, each adding a corrective
    click; video training (`sam2_pvs`) draws mask : click : box on the first frame."""

    mask: float = 0.5
    click: float = 0.25
    box: float = 0.25
    corrective_prob: float = 0.5  # video: chance of a corrective click on one later frame
    still: float = 0.0  # video: chance a sample is its clip's first frame alone (a still image)
    rounds: int = 3  # image: decoder passes per image (1: the first prompt only)
    objects_per_image: int = 1  # image: objects prompted on each image (the drawn one + others)


@dataclass
class PretrainConfig:
    """BEiT-3 pretraining (task `beit3`, `refseg.train.beit3`): mask_prob is the share of a
    masked sample's text tokens replaced by [MASK] (at least one; BEiT-3 masks 50 % of the text
    of image-text pairs); mlm_share the share of samples trained by masked language modelling,
    the others by referring-box grounding."""

    mask_prob: float = 0.5
    mlm_share: float = 0.5


@dataclass
class KeyFramesConfig:
    """GLUS's key-frame selector (task `glus_kfs`, `refseg.train.glus_kfs`): context frames per
    call (8 in the paper), the pseudo-label file, and the early GLUS folder that makes it when it
    is missing. The selector's LLM, tower and adapters are `glus:`'s."""

    context: int = 8
    labels: str | None = None
    early: str | None = None


@dataclass
class TrainConfig:
    # sam2_pvs (video), sam2_image (images), sam_i2v, samwise, evf, glus, glus_kfs, sam2_love; encoders:
    # beit3 (EVF-SAM's), vggish (audio) and frame_vit (SAM2-LOVE's frames)
    task: str = "sam2_pvs"
    out: str = "runs/train"
    steps: int = 100
    batch_size: int = 2  # clips per optimizer step, over all processes
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes held fixed, e.g. vision_encoder
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    samwise: SamwiseConfig = field(default_factory=SamwiseConfig)
    sam_i2v: SamI2VConfig = field(default_factory=SamI2VConfig)  # tapped_dims follow the image SAM
    evf: EvfConfig = field(default_factory=EvfConfig)  # also the encoder the beit3 task pretrains
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    glus: GlusSpec = field(default_factory=GlusSpec)  # the model the glus task builds (and its inference settings)
    key_frames: KeyFramesConfig = field(default_factory=KeyFramesConfig)
    # sam2_love: the model (its `audio` / `vit` sizes are also what the vggish / frame_vit tasks pretrain)
    sam2_love: LoveConfig = field(default_factory=LoveConfig)


def _build(cls: type, values: dict, where: str) -> object:
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where or 'config'}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, path)
        else:
            kwargs[name] = _check(hint, value, path)
    return cls(**kwargs)


def _check(hint: object, value: object, path: str) -> object:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if typing.get_origin(option) is tuple and isinstance(value, list):
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:  # tuple[T, ...]: any length
                return tuple(_check(items[0], v, f"{path}[{i}]") for i, v in enumerate(value))
            if len(items) != len(value):
                raise ValueError(f"{path}: expected {len(items)} values, got {value!r}")
            return tuple(_check(item, v, f"{path}[{i}]") for i, (item, v) in enumerate(zip(items, value)))
        if typing.get_origin(option) is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_check(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if typing.get_origin(option) is dict and isinstance(value, dict):
            key, item = typing.get_args(option)
            return {_check(key, k, f"{path} key (quote YAML words such as null)"): _check(item, v, f"{path}.{k}")
                    for k, v in value.items()}
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
    raise ValueError(f"{path}: expected {' or '.join(getattr(o, '__name__', str(o)) for o in options)}, "
                     f"got {value!r}")


def load_config(source: str | os.PathLike[str] | dict) -> TrainConfig:
    """A `TrainConfig` from a YAML file (or a dict); missing keys take their defaults."""
    if isinstance(source, dict):
        values = source
    else:
        values = read_config_file(source)
    try:
        return _build(TrainConfig, values, "")  # type: ignore[return-value]
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err) if isinstance(source, dict) else f"{source}: {err}") from None


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def dump(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(json.loads(json.dumps(to_dict(config))), sort_keys=False))
