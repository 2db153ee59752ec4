"""How much the BEiT-3 pretrained on SynthRef (configs/beit3_synth.yaml) grounds text in the image.

On every (image, expression) pair of SynthRef `valid` still scenes, with the pretraining heads of
a checkpoint: the masked-language-modelling loss (the same half of the tokens masked in every
run), how well each patch's grounding logit separates the patches the referred objects cover (at
least 30 %) from the others (AUC per pair, averaged), how often the top patch lies on a target,
and the IoU of the box the image [CLS] predicts. Each is measured twice: with the right
images and with the images shuffled among the pairs (texts kept), so a score that does not drop
is one that reads only the text.

    python bench/beit3_grounding.py runs/beit3_synth/checkpoints/step_0001000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

from refseg.data import synth
from refseg.methods.evf_sam import tokenize
from refseg.train.beit3 import Beit3Pretrainer, mask_tokens, patch_coverage, special_positions, target_boxes
from refseg.train.config import load_config


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """[N, 4] (cx, cy, w, h) boxes -> [N] IoU."""
    a0, a1, b0, b1 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2, b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0).prod(1)
    return inter / (a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter)


def auc(scores: Tensor, positive: Tensor) -> float:
    """Share of (positive, negative) pairs that `scores` order correctly."""
    return float((scores[positive][:, None] > scores[~positive][None]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoints/step_N folder of a beit3 pretraining run")
    parser.add_argument("--scenes", type=int, default=36)
    args = parser.parse_args()
    folder = Path(args.checkpoint)
    config = load_config(yaml.safe_load((folder.parent.parent / "config.yaml").read_text()))
    model = Beit3Pretrainer(config.evf)
    model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    model.eval()
    side = config.evf.beit3.image_size
    images, masks, texts = [], [], []
    for sample in synth.split_samples("valid", 0, args.scenes, image=True):
        frame = np.asarray(Image.fromarray(sample.load_frame(0)).resize((side, side), Image.BILINEAR))
        for expression in sample.expressions:
            target = sample.target_mask(expression)[0].astype(np.uint8)
            images.append(frame)
            masks.append(np.asarray(Image.fromarray(target).resize((side, side), Image.NEAREST)).astype(bool))
            texts.append(expression.text)
    pixels, mask = torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))
    ids, padding = tokenize(model.tokenizer, texts, config.evf.max_text_tokens)
    present = mask.flatten(1).any(dim=1)
    boxes = target_boxes(mask)
    shuffled = torch.roll(torch.arange(len(texts)), 7)
    special = special_positions(model.tokenizer, ids, padding)
    torch.manual_seed(0)
    masked, labels = mask_tokens(ids, special, torch.ones(len(texts), dtype=torch.bool), model.tokenizer.mask_token_id,
                                 config.pretrain.mask_prob)
    print(f"{folder}: {len(texts)} SynthRef valid expressions, {int(present.sum())} with a target")
    print("| images | MLM loss | patch AUC | top patch on a target | [CLS] box IoU | box IoU > 0.5 |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for name, order in (("right", torch.arange(len(texts))), ("shuffled", shuffled)):
        with torch.no_grad():
            _, patches, predicted, _ = model(pixels[order], ids, padding)
            text = model(pixels[order], masked, padding)[0]
            mlm = torch.nn.functional.cross_entropy(model.mlm_logits(text[labels >= 0]), labels[labels >= 0])
        covered = patch_coverage(mask, patches.shape[-1])
        rows = [i for i in range(len(texts)) if present[i] and (covered[i] >= 0.3).any() and (covered[i] < 0.3).any()]
        aucs = [auc(patches[i].flatten(), covered[i].flatten() >= 0.3) for i in rows]
        top = [bool(covered[i].flatten()[patches[i].flatten().argmax()] > 0) for i in rows]
        iou = box_iou(predicted[present], boxes[present])
        print(f"| {name} | {float(mlm):.3f} | {np.mean(aucs):.3f} | {np.mean(top):.3f} | {float(iou.mean()):.3f} | "
              f"{float((iou > 0.5).float().mean()):.3f} |")


if __name__ == "__main__":
    main()
