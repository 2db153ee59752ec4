"""The auxiliary attribute objective of SAM 2 image training: its loss against a direct
computation, SynthRef's attribute labels against the pixels they describe, and a run that
trains, checkpoints and resumes its read-outs without saving them in the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from refseg.data import synth
from refseg.train.attributes import AttributeHeads
from test_train import losses, run, weights, write_config


def test_the_loss_classifies_each_objects_mask_weighted_mean_feature():
    torch.manual_seed(0)
    heads = AttributeHeads([3], {"shape": ("circle", "square"), "colour": ("red", "green", "blue")})
    x = torch.randn(2, 3, 2, 2)
    # object 0 on image 1: the whole top-left cell and half of the top-right one; object 1 on image 0: one cell
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, :4, :4] = 1
    masks[0, 0, :4, 4:6] = 1
    masks[1, 0, 4:, 4:] = 1
    image_of = torch.tensor([1, 0])
    labels = [{"shape": "square", "colour": "blue"}, {"shape": "circle"}]  # object 1's colour unknown: skipped
    mean_0 = (2 * x[1, :, 0, 0] + x[1, :, 0, 1]) / 3  # coverage 1 and 1/2
    mean_1 = x[0, :, 1, 1]

    def ce(head: torch.nn.Conv2d, feature: torch.Tensor, y: int) -> torch.Tensor:
        logits = head.weight[:, :, 0, 0] @ feature + head.bias
        return F.cross_entropy(logits[None], torch.tensor([y]))

    shape, colour = heads.heads[0]["shape"], heads.heads[0]["colour"]
    expected = ((ce(shape, mean_0, 1) + ce(shape, mean_1, 0)) / 2 + ce(colour, mean_0, 2)) / 2
    torch.testing.assert_close(heads.loss([x], image_of, masks, labels), expected)
    with pytest.raises(ValueError, match="1 levels expected, got 2"):
        heads.loss([x, x], image_of, masks, labels)


def test_synthref_attributes_describe_the_rendered_objects():
    sample = next(synth.split_samples("train", 0, 1))
    scene = synth.make_scene("train", 0, 0)
    frame = sample.load_frame(0).astype(float)
    assert set(sample.attributes) == {o.obj_id for o in scene.objects}
    for obj in scene.objects:
        labels = sample.attributes[obj.obj_id]
        assert set(labels) == set(synth.ATTRIBUTES)
        assert all(labels[name] in values for name, values in synth.ATTRIBUTES.items())
        mask = sample.masks[obj.obj_id][0]
        if labels["texture"] == "plain" and mask.sum() > 50:  # its pixels are its colour (the renderer adds noise)
            mean = frame[mask].mean(0)
            nearest = min(synth.COLOURS, key=lambda c: np.abs(np.array(synth.COLOURS[c]) - mean).sum())
            assert nearest == labels["colour"]
        # the object's visible extent is about its size's radius (occlusion only shrinks it)
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert min(np.ptp(xs), np.ptp(ys)) <= 2 * synth.SIZES[labels["size"]] + 2


def test_a_crop_relabels_size_by_the_radius_it_shows():
    assert synth.seen_size("medium", 1.0) == "medium" and synth.seen_size("large", 1.4) == "large"
    assert synth.seen_size("medium", 26 / 18) == "large"  # 18 px shown at 26 px
    assert synth.seen_size("small", 1.15) == "small" and synth.seen_size("small", 1.3) == "medium"  # 13.8 / 15.6 px
    # a sampled crop: its zoom is the frame side over the crop side, and the object's extent grows by it
    from refseg.data.sampler import ClipSampler
    sample = next(synth.split_samples("train", 0, 1))
    sampler = ClipSampler([sample], clip_len=1, size=256, seed=3, by="object", objects=True, flip_p=0.0,
                          crop_scale=(0.7, 0.75))
    clip = sampler.sample()
    assert 1 / 0.75 - 0.01 <= clip.zoom <= 1 / 0.7 + 0.01
    (target,) = clip.expression.target_ids
    whole, shown = sample.masks[target][clip.start].sum(), clip.objects[target][0].sum()
    assert not clip.objects[target][0][[0, -1]].any() and not clip.objects[target][0][:, [0, -1]].any()  # uncut
    assert shown / whole == pytest.approx(clip.zoom**2, rel=0.05)  # so its area grows by zoom^2


def test_image_training_with_attributes_trains_the_readouts_resumes_them_and_saves_only_sam2(tmp_path):
    changes = dict(task="sam2_image", data={"count": 2, "image": True},
                   prompts={"click": 0.5, "box": 0.5, "rounds": 1, "objects_per_image": 3},
                   loss={"focal": 20.0, "dice": 1.0, "iou": 1.0, "object": 1.0, "attributes": 1.0})
    straight = tmp_path / "straight"
    done = run(["-m", "refseg", "train", str(write_config(tmp_path / "a.yaml", straight, **changes))])
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(r["attributes"] > 0 and 0 <= r["shape_accuracy"] <= 1 for r in records)
    first = torch.load(straight / "checkpoints" / "step_0000001" / "state.pt", weights_only=False)["task"]
    last = torch.load(straight / "checkpoints" / "step_0000004" / "state.pt", weights_only=False)["task"]
    assert set(first) == set(last) and any(k.startswith("attributes.heads.") for k in first)
    assert all(not torch.equal(first[k], last[k]) for k in first if k.endswith("weight"))  # the read-outs train
    saved = load_file(str(straight / "final" / "model.safetensors"))
    assert not any("attributes" in k for k in saved) and set(saved) == set(weights(straight))
    # a run stopped after its step-2 checkpoint and resumed computes the same steps, read-outs included
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    shutil.rmtree(stopped / "final")
    for step in (3, 4):
        shutil.rmtree(stopped / "checkpoints" / f"step_{step:07d}")
    resumed = run(["-m", "refseg", "train", str(write_config(tmp_path / "b.yaml", stopped, **changes)), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(stopped) == losses(straight)
    a, b = weights(straight), weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attributes_need_samples_that_know_them():
    from refseg.data.sample import VideoSample, in_memory
    from refseg.sam import Sam2, tiny_test_config
    from refseg.train.config import load_config
    from refseg.train.sam2_image import Sam2ImageTask

    sample = next(synth.split_samples("train", 0, 1, height=128, width=128, image=True))
    bare = VideoSample("real_0001", sample.frame_names, in_memory(sample.load_frames()), sample.masks)
    config = load_config({"task": "sam2_image", "model": {"sam2": "tiny-test", "image_size": 128},
                          "loss": {"attributes": 1.0}})
    task = Sam2ImageTask(Sam2(tiny_test_config(image_size=128)), config)
    with pytest.raises(ValueError, match="loss.attributes: video real_0001 does not say what its objects look like"):
        task.draw(task.sampler([bare], seed=0), np.random.default_rng(0))


def test_encoder_from_puts_another_checkpoints_image_encoder_under_the_loaded_memory_modules(tmp_path):
    from refseg.sam import Sam2, tiny_test_config
    from refseg.train.config import load_config
    from refseg.train.loop import build_sam2

    torch.manual_seed(0)
    tracker, donor = Sam2(tiny_test_config(image_size=128)), Sam2(tiny_test_config(image_size=128))
    tracker.save_pretrained(tmp_path / "tracker")
    donor.save_pretrained(tmp_path / "donor")
    built = build_sam2(load_config({"model": {"sam2": str(tmp_path / "tracker"), "image_size": 128,
                                              "encoder_from": str(tmp_path / "donor")}}))
    for name, value in built.state_dict().items():
        source = donor if name.startswith("vision_encoder.") else tracker
        assert torch.equal(value, source.state_dict()[name]), name
    Sam2(tiny_test_config(image_size=256)).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="encoder_from .*other: its image encoder's sizes differ"):
        build_sam2(load_config({"model": {"sam2": str(tmp_path / "tracker"), "encoder_from": str(tmp_path / "other")}}))
