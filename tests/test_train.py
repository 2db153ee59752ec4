"""The training loop: kill-and-resume equality and DDP equality, on a tiny config (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from refseg.train.config import load_config

TINY = {"steps": 4, "batch_size": 2, "log_every": 1, "checkpoint_every": 1, "seed": 3,
        "data": {"count": 2, "clip_len": 3}, "model": {"sam2": "tiny-test", "image_size": 128},
        "optim": {"lr": 0.001, "warmup_steps": 1, "schedule": "cosine"}}


def write_config(path: Path, out: Path, **changes) -> Path:
    config = json.loads(json.dumps(TINY))
    config.update(changes)
    config["out"] = str(out)
    path.write_text(yaml.safe_dump(config))
    return path


def run(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run_dir / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown key 'lrr'"):
        load_config({"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="steps: expected int"):
        load_config({"steps": "ten"})
    assert load_config({"data": {"phenomenon_weights": {"null": 4}}}).data.phenomenon_weights == {"null": 4.0}
    with pytest.raises(ValueError, match=r"data.phenomenon_weights.null: expected float, got 'many'"):
        load_config({"data": {"phenomenon_weights": {"null": "many"}}})
    with pytest.raises(ValueError, match="data.phenomenon_weights key .*expected str, got None"):
        load_config({"data": {"phenomenon_weights": {None: 4}}})  # YAML reads an unquoted null key as None


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    assert run(["-m", "refseg", "train", str(write_config(tmp_path / "a.yaml", straight))]).returncode == 0
    killed = tmp_path / "killed"
    config = write_config(tmp_path / "b.yaml", killed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "refseg", "train", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_0000002").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    resumed = run(["-m", "refseg", "train", str(config), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(killed) == losses(straight)  # same losses, step for step
    a, b = weights(straight), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_equal_one_with_the_whole_batch(tmp_path):
    one = tmp_path / "one"
    single = run(["-m", "refseg", "train", str(write_config(tmp_path / "one.yaml", one, steps=2))])
    assert single.returncode == 0, single.stderr[-2000:]
    two = tmp_path / "two"
    ddp = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "refseg", "train",
               str(write_config(tmp_path / "two.yaml", two, steps=2))])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = weights(one), weights(two)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    changed = [k for k in a if not torch.equal(a[k], load_file(str(one / "checkpoints" / "step_0000001" / "model.safetensors"))[k])]
    assert changed, "training changed no weight"


def test_samwise_trains_only_its_modules(tmp_path):
    from refseg.methods.samwise import Samwise

    out = tmp_path / "samwise"
    config = write_config(tmp_path / "s.yaml", out, task="samwise", steps=3, checkpoint_every=3,
                          data={"count": 3, "clip_len": 6},
                          samwise={"clip_len": 6, "cme_window": 2, "patches": [4, 2, 2]},
                          loss={"focal": 1.0, "dice": 1.0, "object": 1.0, "cme": 1.0})
    result = run(["-m", "refseg", "train", str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss"] > 0 and "cme" in r and 0 <= r["cme_switch"] <= 1 for r in records)
    saved = weights(out)
    assert not any(k.startswith("text.") for k in saved)  # the frozen text encoder is not copied
    trained = Samwise.from_pretrained(out / "final")
    from refseg.models import load

    checkpoint = load(out / "checkpoints" / "step_0000003")  # a checkpoint loads as a model too
    assert all(torch.equal(checkpoint.state_dict()[n], p) for n, p in trained.state_dict().items())
    torch.manual_seed(3)  # the loop seeds like this before building the model
    from refseg.train.loop import build_task

    fresh = build_task(load_config(yaml.safe_load(config.read_text()))).model
    learned = ("adapters.", "prompt.", "cme.")
    frozen = [n for n in fresh.state_dict() if not n.startswith(("text.", *learned))]
    assert frozen and all(torch.equal(fresh.state_dict()[n], trained.state_dict()[n]) for n in frozen)
    changed = [n for n, p in fresh.state_dict().items() if n.startswith(learned) and
               not torch.equal(p, trained.state_dict()[n])]
    assert len(changed) > 10

    # a second stage starts from the first's weights (`model.init`); with lr 0 it keeps them
    from refseg.train.loop import train

    stage2 = yaml.safe_load(config.read_text())
    stage2.update(out=str(tmp_path / "stage2"), steps=1, model={**stage2["model"], "init": str(out / "final")},
                  optim={**stage2["optim"], "lr": 0.0})
    continued = Samwise.from_pretrained(train(load_config(stage2), progress=False) / "final")
    assert all(torch.equal(continued.state_dict()[n], p) for n, p in trained.state_dict().items())
    # or from a folder that names its SAM 2 instead of storing it, as the shipped default does
    trained.save_pretrained(tmp_path / "shipped", sam2_source="tiny-test")
    stage2.update(out=str(tmp_path / "stage2b"), model={**stage2["model"], "init": str(tmp_path / "shipped")})
    continued = Samwise.from_pretrained(train(load_config(stage2), progress=False) / "final")
    assert all(torch.equal(continued.state_dict()[n], p) for n, p in trained.state_dict().items())
    stage2["model"]["sam2"] = "synth-small"
    with pytest.raises(ValueError, match="holds a run already .*--resume.*--overwrite"):
        train(load_config(stage2), progress=False)  # stage2b's run is not mixed with a new one
    with pytest.raises(ValueError, match="its SAM 2 is 'tiny-test'.*set model.sam2: tiny-test"):
        train(load_config(stage2), progress=False, overwrite=True)
    # its modules may start on another SAM 2 of the same sizes when the config says which it left
    other = tmp_path / "other_sam2"
    trained.sam.save_pretrained(other)
    stage2["model"].update(sam2=str(other), init_sam2="tiny-test")
    moved = Samwise.from_pretrained(train(load_config(stage2), progress=False, overwrite=True) / "final")
    assert all(torch.equal(moved.state_dict()[n], p) for n, p in trained.state_dict().items() if not n.startswith("text."))
    stage2["model"]["init_sam2"] = "synth"
    with pytest.raises(ValueError, match="its SAM 2 is 'tiny-test'.*or model.init_sam2: tiny-test"):
        train(load_config(stage2), progress=False, overwrite=True)
    stage2["model"].pop("init_sam2")
    stage2["model"]["init"] = str(tmp_path / "none")
    with pytest.raises(ValueError, match="none/model.safetensors: no such checkpoint file"):
        train(load_config(stage2), progress=False, overwrite=True)


def test_image_task_prompts_several_objects_of_one_image():
    import numpy as np

    from refseg.data import synth
    from refseg.sam import Sam2, tiny_test_config
    from refseg.train.sam2_image import Sam2ImageTask

    config = load_config({"task": "sam2_image", "model": {"sam2": "tiny-test", "image_size": 128},
                          "prompts": {"click": 0.5, "box": 0.5, "rounds": 2, "objects_per_image": 3}})
    torch.manual_seed(0)
    task = Sam2ImageTask(Sam2(tiny_test_config(image_size=128)), config)
    sampler = task.sampler(list(synth.split_samples("train", 0, 3, height=128, width=128)), seed=0)
    rng = np.random.default_rng(0)
    batch = [task.draw(sampler, rng) for _ in range(4)]
    # at most objects_per_image prompts per image, and the cap is reached (SynthRef frames show
    # three or more objects)
    assert max(len(s.masks) for s in batch) == 3
    for sample in batch:
        assert len(sample.masks) <= 3
        assert all(m.any() for m in sample.masks)
        # distinct objects: masks of one frame do not overlap
        total = np.sum(sample.masks, axis=0)
        assert total.max() == 1
        for mask, points in zip(sample.masks, sample.points):
            for x, y, label in points:
                if label == 1:  # a click lies inside its object
                    assert mask[int(y), int(x)]
    assert sum(len(s.masks) for s in batch) > len(batch)
    losses = task(batch)
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert task.model.mask_decoder.mask_tokens.weight.grad.abs().sum() > 0


def test_frozen_prefixes_stay_fixed_and_the_rest_trains(tmp_path):
    from refseg.train.loop import build_task

    out = tmp_path / "frozen"
    config = write_config(tmp_path / "f.yaml", out, steps=2, checkpoint_every=2, freeze=["vision_encoder"])
    result = run(["-m", "refseg", "train", str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    torch.manual_seed(3)
    fresh = build_task(load_config(yaml.safe_load(config.read_text()))).model.state_dict()
    saved = weights(out)
    encoder = [n for n in fresh if n.startswith("vision_encoder.")]
    assert encoder and all(torch.equal(fresh[n], saved[n]) for n in encoder)
    assert sum(not torch.equal(fresh[n], saved[n]) for n in fresh if n.startswith("mask_decoder.")) > 10


def test_freeze_names_a_parameter_that_does_not_exist():
    from refseg.sam import Sam2, tiny_test_config
    from refseg.train.loop import freeze

    with pytest.raises(ValueError, match="freeze: no parameter of Sam2 is named 'vision'"):
        freeze(Sam2(tiny_test_config()), ["vision"])  # a prefix must end at a name boundary


def test_evf_trains_encoder_and_projector_on_images_with_sam2_frozen(tmp_path):
    from refseg.methods.evf_sam import EvfSam

    out = tmp_path / "evf"
    beit3 = {"hidden_size": 32, "layers": 1, "heads": 2, "ffn_size": 48, "vocab_size": 30522, "image_size": 32,
             "max_text_positions": 34}
    config = write_config(tmp_path / "e.yaml", out, task="evf", steps=2, checkpoint_every=2, batch_size=3,
                          data={"count": 3, "clip_len": 1, "image": True},
                          evf={"beit3": beit3, "text_embeddings": None},
                          loss={"bce": 1.0, "dice": 1.0, "object": 1.0})
    result = run(["-m", "refseg", "train", str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 and "bce" in r for r in records)
    trained = EvfSam.from_pretrained(out / "final")
    from refseg.models import load

    checkpoint = load(out / "checkpoints" / "step_0000002")  # a checkpoint loads as a model too
    assert all(torch.equal(checkpoint.state_dict()[n], p) for n, p in trained.state_dict().items())
    from refseg.train.loop import build_task

    torch.manual_seed(3)
    fresh = build_task(load_config(yaml.safe_load(config.read_text()))).model.state_dict()
    after = trained.state_dict()
    sam = [n for n in fresh if n.startswith("sam.")]
    assert sam and all(torch.equal(fresh[n], after[n]) for n in sam)
    assert any(not torch.equal(fresh[n], after[n]) for n in fresh if n.startswith("projector."))
    assert sum(not torch.equal(fresh[n], after[n]) for n in fresh if n.startswith("encoder.")) > 10


def test_evf_feature_cache_encodes_each_image_once_and_keeps_the_losses():
    import numpy as np
    from PIL import Image

    from refseg.train.loop import build_task, load_samples

    beit3 = {"hidden_size": 32, "layers": 1, "heads": 2, "ffn_size": 48, "vocab_size": 30522, "image_size": 32,
             "max_text_positions": 34}
    values = {**json.loads(json.dumps(TINY)), "task": "evf", "batch_size": 6,
              "data": {"count": 2, "clip_len": 1, "image": True, "cache_features": True},
              "evf": {"beit3": beit3, "text_embeddings": None}, "loss": {"bce": 1.0, "dice": 1.0, "object": 1.0}}
    torch.manual_seed(0)
    cached = build_task(load_config(values)).eval()
    plain = build_task(load_config({**values, "data": {**values["data"], "cache_features": False}})).eval()
    plain.model.load_state_dict(cached.model.state_dict())
    samples = load_samples(cached.config)
    sampler = cached.sampler(samples, seed=0)
    rng = np.random.default_rng(0)
    batch = [cached.draw(sampler, rng) for _ in range(values["batch_size"])]
    side = cached.model.sam.image_size
    rendered = {s.video_id: np.asarray(Image.fromarray(s.load_frame(0)).resize((side, side), Image.BILINEAR))
                for s in samples}
    for item in batch:  # neither cropped nor jittered: the rendered image (resized), or its mirror image
        expected = rendered[item.clip.video_id][:, ::-1] if item.clip.flipped else rendered[item.clip.video_id]
        assert np.array_equal(item.clip.frames[0], expected)
    distinct = {(item.clip.video_id, item.clip.flipped) for item in batch}
    assert len(distinct) < len(batch)  # some image recurs within the batch

    calls = []
    encode = cached.model.sam.encode_images
    cached.model.sam.encode_images = lambda x: calls.append(len(x)) or encode(x)
    with torch.no_grad():
        first, again, reference = cached(batch), cached(batch), plain(batch)
    assert calls == [len(distinct)] and len(cached.cache) == len(distinct)  # once per image, never again
    for name in ("loss", "bce", "dice", "object"):
        assert float(first[name]) == float(again[name])
        assert abs(float(first[name]) - float(reference[name])) < 2e-3 * max(1.0, abs(float(reference[name])))
    with pytest.raises(ValueError, match="data.cache_features: only the evf and glus tasks"):
        build_task(load_config({**json.loads(json.dumps(TINY)), "data": {"cache_features": True}}))


def test_expression_tasks_draw_batches_in_groups_that_share_a_clip():
    import numpy as np

    from refseg.train.loop import build_task, load_samples

    values = {**json.loads(json.dumps(TINY)), "task": "samwise", "batch_size": 7,
              "data": {"count": 3, "clip_len": 2, "expressions_per_clip": 3},
              "samwise": {"adapter_dim": 16, "heads": 2, "patches": [2, 2, 1], "clip_len": 2}}
    task = build_task(load_config(values))
    samples = load_samples(task.config)
    batch = task.draw_batch(task.sampler(samples, seed=0), np.random.default_rng(0), 7)
    assert len(batch) == 7
    groups: list[list] = []
    for item in batch:  # consecutive samples of one clip form a group
        clip = item.clip
        if groups and (clip.video_id, clip.start) == (groups[-1][0].video_id, groups[-1][0].start) \
                and np.array_equal(clip.frames, groups[-1][0].frames):
            groups[-1].append(clip)
        else:
            groups.append([clip])
    assert len(groups) < len(batch) and all(len(g) <= 3 for g in groups)
    assert all(len({c.expression.text for c in g}) == len(g) for g in groups)
    assert len({item.seed for item in batch}) == len(batch)  # each sample its own dropout seed
    with pytest.raises(ValueError, match="data.expressions_per_clip: taken by the tasks samwise, evf, beit3, glus, glus_kfs only"):
        build_task(load_config({**json.loads(json.dumps(TINY)), "data": {"expressions_per_clip": 2}}))
    with pytest.raises(ValueError, match="at least 1"):
        build_task(load_config({**json.loads(json.dumps(TINY)), "data": {"expressions_per_clip": 0}}))


def test_masked_tokens_and_referred_boxes_are_what_pretraining_asks_for():
    from refseg.methods.evf_sam import MINILM, load_tokenizer, tokenize
    from refseg.train.beit3 import mask_tokens, patch_coverage, special_positions, target_boxes

    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:6, 1:4] = True  # rows 2..5, columns 1..3
    boxes = target_boxes(masks)
    assert torch.allclose(boxes[0], torch.tensor([2.5 / 10, 4 / 8, 3 / 10, 4 / 8]))
    assert torch.equal(boxes[1], torch.zeros(4))  # nothing referred
    square = torch.zeros(1, 8, 8, dtype=torch.bool)
    square[0, :4, :2] = True  # half of the top-left 4 x 4 patch
    assert torch.equal(patch_coverage(square, 2), torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]))

    tokenizer = load_tokenizer(MINILM)
    ids, padding = tokenize(tokenizer, ["the red circle", "a star"], 32)
    assert special_positions(tokenizer, ids, padding).tolist() == [[True, False, False, False, True],
                                                                    [True, False, False, True, True]]

    torch.manual_seed(0)
    ids = torch.arange(1, 41).reshape(4, 10)
    special = torch.zeros(4, 10, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS], [SEP]
    special[3, 3:] = True  # a short text: positions 1, 2 only
    chosen = torch.tensor([True, False, True, True])
    inputs, labels = mask_tokens(ids, special, chosen, mask_id=0, prob=0.5)
    masked = inputs == 0
    assert torch.equal(labels[masked], ids[masked]) and bool((labels[~masked] == -100).all())
    assert not masked[1].any() and not (masked & special).any()  # unchosen rows and specials stay
    assert all(masked[i].sum() >= 1 for i in (0, 2, 3))  # at least one token per chosen row
    inputs, _ = mask_tokens(ids, special, chosen, mask_id=0, prob=0.0)
    assert [int((inputs[i] == 0).sum()) for i in range(4)] == [1, 0, 1, 1]
    many = mask_tokens(ids.repeat(250, 1), special.repeat(250, 1), chosen.repeat(250), 0, 0.5)[0] == 0
    assert abs(float(many[::4].float().sum(1).mean()) / 8 - 0.5) < 0.05  # half of the 8 candidates


def test_beit3_pretraining_trains_the_encoder_that_evf_sam_then_starts_from(tmp_path):
    from conftest import random_sam2
    from refseg.encoders.fusion import Beit3Config
    from refseg.methods.evf_sam import EvfConfig, EvfSam

    out = tmp_path / "beit3"
    beit3 = {"hidden_size": 32, "layers": 1, "heads": 2, "ffn_size": 48, "vocab_size": 30522, "image_size": 32,
             "max_text_positions": 34}
    config = write_config(tmp_path / "b.yaml", out, task="beit3", steps=3, checkpoint_every=3, batch_size=6,
                          data={"count": 3, "clip_len": 1, "image": True, "expressions_per_clip": 2},
                          evf={"beit3": beit3, "text_embeddings": None},
                          loss={"mlm": 1.0, "patch": 1.0, "box": 5.0, "object": 1.0}, pretrain={"mask_prob": 0.5, "mlm_share": 0.5})
    result = run(["-m", "refseg", "train", str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["mlm"] > 5 and 0 < r["box"] < 1 and r["object"] > 0 and r["patch"] > 0 for r in records)  # ln V = 10.3
    exported = load_file(str(out / "final" / "model.safetensors"))
    checkpoint = weights(out)
    heads = {"mlm_bias", "ground.0.weight", "ground.0.bias", "ground.2.weight", "ground.2.bias", "patch.weight",
             "patch.bias"}
    assert set(checkpoint) == {f"encoder.{k}" for k in exported} | heads
    assert all(torch.equal(exported[k], checkpoint[f"encoder.{k}"]) for k in exported)

    sizes = Beit3Config(**beit3)
    evf = EvfSam(random_sam2(), EvfConfig(beit3=sizes, text_embeddings=None, encoder_weights=str(out / "final")))
    assert all(torch.equal(v, exported[k]) for k, v in evf.encoder.state_dict().items())
    with pytest.raises(ValueError, match="has hidden_size 32, the config asks for 64"):
        EvfSam(random_sam2(), EvfConfig(beit3=Beit3Config(**{**beit3, "hidden_size": 64}), text_embeddings=None,
                                        encoder_weights=str(out / "final")))
    with pytest.raises(ValueError, match="no such BEiT-3 folder or checkpoint file"):
        EvfSam(random_sam2(), EvfConfig(beit3=sizes, text_embeddings=None, encoder_weights=str(tmp_path / "none")))


def test_sam_i2v_task_trains_its_modules_and_resumes_bit_exactly(tmp_path):
    import shutil

    from refseg.methods.sam_i2v import SamI2V

    changes = dict(task="sam_i2v", freeze=["sam.vision_encoder"], model={"sam2": "tiny-test", "image_size": 128,
                   "memory_layers": 1}, sam_i2v={"temporal_dim": 16}, loss={"structure": 20.0, "iou": 1.0, "object": 1.0},
                   prompts={"mask": 0.5, "click": 0.25, "box": 0.25, "corrective_prob": 0.5, "still": 0.5})
    straight = tmp_path / "straight"
    done = run(["-m", "refseg", "train", str(write_config(tmp_path / "a.yaml", straight, **changes))])
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all("structure" in r and "iou" in r and "object" in r for r in records)
    first = load_file(str(straight / "checkpoints" / "step_0000001" / "model.safetensors"))
    last = weights(straight)
    assert all(torch.equal(first[k], last[k]) for k in last if k.startswith("sam.vision_encoder."))
    for prefix in ("tfi.", "mpg.", "sam.memory_attention.", "sam.memory_encoder."):
        assert any(not torch.equal(first[k], last[k]) for k in last if k.startswith(prefix)), prefix
    model = SamI2V.from_pretrained(straight / "final")
    assert model.config.tapped_dims == (64, 128, 256) and model.sam.config.memory_attention_num_layers == 1
    # a run stopped after its step-2 checkpoint and resumed computes the same steps
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    shutil.rmtree(stopped / "final")
    for step in (3, 4):
        shutil.rmtree(stopped / "checkpoints" / f"step_{step:07d}")
    config = write_config(tmp_path / "b.yaml", stopped, **changes)
    resumed = run(["-m", "refseg", "train", str(config), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(stopped) == losses(straight)
    a, b = weights(straight), weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_still_images_are_single_frames_prompted_by_a_click_or_a_box():
    import numpy as np

    from refseg.prompts import Mask
    from refseg.train.loop import build_task, load_samples

    config = load_config({**TINY, "prompts": {"mask": 1.0, "click": 0.5, "box": 0.5, "still": 0.5}})
    task = build_task(config)
    sampler = task.sampler(load_samples(config), seed=0)
    rng = np.random.default_rng(0)
    samples = [task.draw(sampler, rng) for _ in range(40)]
    stills = [s for s in samples if len(s.clip.frames) == 1]
    assert 8 < len(stills) < 32
    assert all(not isinstance(s.prompt, Mask) and s.corrective_frame == 0 for s in stills)
    assert all(len(s.clip.mask) == 1 for s in stills)
    assert any(isinstance(s.prompt, Mask) for s in samples if len(s.clip.frames) > 1)
