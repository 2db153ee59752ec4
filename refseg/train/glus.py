"""GLUS training (paper Sec. 4 and 5.2, App. B.2; the official `train_ds.py`).

A sample is one clip: `glus.inference.context_frames` context frames drawn one per segment of the
video (`frames.context_frames` with a generator) and `data.clip_len` consecutive query frames,
with up to `data.expressions_per_clip` expressions of that video (3 in the paper) that share the
clip. Per expression:

1. one LLM call over a complete conversation (`conversation.glus_prompt(complete=True)`): the
   context frames, then one turn per query frame, every answer "... [SEG]." (with
   `glus.absent_answer`, "... empty." where the frame's target mask is empty; such a frame is
   skipped by SAM 2 as inference skips it);
2. the language loss: cross-entropy on the assistant's tokens (`conversation.answer_targets`);
3. each query frame's projected [SEG] prompts SAM 2 on that frame, in order, through the engine
   with GLUS's memory at stride 1 (`hooks.GlusHooks`; memories detached unless
   `glus.train_memory`): BCE and Dice (LISA's, smooth 1e-3) on the masks at the model's input size;
4. with `glus.presence_gate`, `loss.object` x cross-entropy of SAM 2's presence score against
   whether the frame shows the target (masks are gated by it, as at inference);
5. the object contrastive loss (Sec. 4.3) on the projected [SEG] tokens, with a bank that lives as
   long as the task and is stored in each checkpoint (a resumed run contrasts with the same bank).

The loss is `loss.ce` x CE + `loss.bce` x BCE + `loss.dice` x Dice + `loss.contrastive` x L_con
(1.0, 2.0, 0.5, 0.1 in the paper). A single-frame stage (LISA's pretraining, which refseg cannot
download) is the same task on SynthRef referring images: `data.image: true`, `data.clip_len: 1`,
`glus.inference.context_frames: 0`.

Read-out stage (`data.cache_features`, single frames only): everything up to the [SEG] state is
held fixed (the LLM and its adapters, the projector, the added token rows), so the state of an
(image, expression) pair is computed once, in eval mode, and kept (float32 on the CPU), as are
SAM 2's features of each image (float16); only `text_hidden_fcs` and SAM 2's mask decoder learn
to read the state, and a step decodes the whole batch at once. There is no language loss (nothing
it would train learns). The sampler then neither crops nor jitters (flips stay), so pairs recur.
It stands in for the grounded start LISA's pretraining gives the paper: trained end to end from
an LLM that never saw SynthRef, the [SEG] token stops depending on the text (docs/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.data.sample import VideoSample
from refseg.data.sampler import Clip, ClipSampler
from refseg.methods.glus import Glus
from refseg.methods.glus.contrastive import TokenBank, TokenTag, object_contrastive_loss
from refseg.methods.glus.conversation import answer_targets, glus_input_ids, glus_prompt, seg_rows
from refseg.methods.glus.frames import training_context
from refseg.methods.glus.hooks import GlusHooks
from refseg.sam.mask_decoder import DecoderOutput, decode_masks
from refseg.sam.preprocess import SAM2
from refseg.sam.prompt_encoder import embed_prompts
from refseg.train.config import TrainConfig
from refseg.train.losses import bce_loss, dice_loss, object_score_loss
from refseg.train.task import ExpressionTask, FeatureCache, Referred, image_key, seeded

OBJ = 1  # the one object of a GLUS pass (`GlusHooks.session`)
CALIBRATION_SEED, CALIBRATION_CLIPS = 7919, 32  # `glus.standardize_seg`: clips drawn apart from training's
LISA_DICE_SMOOTH = 1e-3  # LISA's dice: scale 1000, eps 1e-6
HELD_IN_READOUT = ("vision.", "llm.llm.", "llm.added_")  # what `data.cache_features` holds fixed


class GlusTask(ExpressionTask):
    """GLUS on referring expressions (see the module docstring)."""

    model: Glus

    def __init__(self, model: Glus, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.bank = TokenBank(512)
        # read-out stage (`data.cache_features`): (image digest, text) -> [SEG] state [H], and
        # SAM 2's features of each image (high_res..., embed)
        self.states: dict[tuple[bytes, str], Tensor] | None = None
        self.features = FeatureCache()
        if config.data.cache_features:
            if config.data.clip_len != 1 or model.config.context_frames:
                raise ValueError("data.cache_features: GLUS keeps the [SEG] states of single frames; set "
                                 "data.clip_len: 1 and glus.inference.context_frames: 0")
            for name, param in model.named_parameters():
                if name.startswith(HELD_IN_READOUT):
                    param.requires_grad_(False)
            self.states = {}

    def sampler(self, samples: Sequence[VideoSample], seed: int) -> ClipSampler:
        # with the cache, the same image must give the same features: flips only
        fixed = dict(crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0) if self.states is not None else {}

        def clips(seed: int, weights: dict[str, float]) -> ClipSampler:
            return ClipSampler(samples, clip_len=self.config.data.clip_len, size=self.config.model.image_size,
                               seed=seed, by="expression", weights=weights,
                               context=training_context(self.model.config.context_frames), **fixed)

        spec = self.model.spec
        if spec is not None and spec.standardize_seg and not self.model.llm.calibrated:
            calibration = clips(seed + CALIBRATION_SEED, {})
            self.calibrate([calibration.sample() for _ in range(CALIBRATION_CLIPS)])
        return clips(seed, self.config.data.phenomenon_weights)

    def present(self, clip: Clip) -> list[bool]:
        """Per query frame of `clip`: whether it is answered with [SEG] (always, unless the model
        learns to say a frame is empty, `GlusSpec.absent_answer`: then where its target mask is
        not empty)."""
        masks = clip.mask[clip.context:]
        spec = self.model.spec
        if spec is None or not spec.absent_answer:
            return [True] * len(masks)
        return [bool(m.any()) for m in masks]

    def conversation(self, clip: Clip) -> tuple[list[int], Tensor, Tensor]:
        """(ids, image tokens [context + T, m, H], LLM states [L', H]) of the complete training
        conversation of `clip`: its context frames, then one answered turn per query frame ([SEG],
        or `ABSENT_WORD` where `present` says no)."""
        model = self.model
        turns = len(clip.frames) - clip.context
        failed = [not p for p in self.present(clip)]
        prompt = glus_prompt(clip.expression.text, turns, clip.context, failed, complete=True, absent=True)
        ids = glus_input_ids(prompt, model.tokenizer)
        images = model.vision(model.vision.pixels(list(clip.frames)))
        return ids, images, model.llm.states(ids, images)

    @torch.no_grad()
    def calibrate(self, clips: list[Clip]) -> None:
        """Standardise the [SEG] state by its statistics over the [SEG]s of `clips` (`GlusLlm.calibrate`)."""
        model = self.model
        mode = model.training
        model.eval()  # no adapter dropout in the statistics
        states = []
        for clip in clips:
            ids, images, hidden = self.conversation(clip)
            states.append(hidden[seg_rows(ids, model.seg_id, images.shape[1])])
        model.llm.calibrate(torch.cat(states))
        model.train(mode)

    def forward(self, batch: list[Referred]) -> dict[str, Tensor]:
        """Mean of the per-expression losses, plus the contrastive loss over the batch's tokens."""
        tokens, tags, frames = [], [], []
        if self.states is not None:
            out, prompts = self.readout_losses(batch)
            tokens, frames = list(prompts[:, None]), [[0]] * len(batch)
        else:
            terms = []
            for sample in batch:
                with seeded(sample.seed):
                    losses, prompts, segmented = self.expression_losses(sample)
                terms.append(losses)
                tokens.append(prompts)
                frames.append(segmented)
            out = {k: torch.stack([t[k] for t in terms]).mean() for k in terms[0]}
        for sample, segmented in zip(batch, frames):
            clip = sample.clip
            tags += [TokenTag(clip.video_id, clip.expression.exp_id, clip.start + t, frozenset(clip.expression.target_ids))
                     for t in segmented]
        generator = torch.Generator().manual_seed(batch[0].seed)
        contrastive = object_contrastive_loss(torch.cat(tokens), tags, self.bank, generator)
        out["contrastive"] = contrastive if contrastive is not None else out["loss"].new_zeros(())
        out["loss"] = out["loss"] + self.config.loss.contrastive * out["contrastive"]
        return out

    def expression_losses(self, sample: Referred) -> tuple[dict[str, Tensor], Tensor, list[int]]:
        """(losses of one expression, its projected [SEG] tokens [P, C], the query frame of each).
        A frame answered `ABSENT_WORD` is skipped as inference skips it (no mask, no memory); its
        only loss is the language loss. BCE and Dice average over the frames with a [SEG] (0 when
        there are none)."""
        model, w, clip = self.model, self.config.loss, sample.clip
        query = clip.frames[clip.context:]
        present = self.present(clip)
        segmented = [t for t, p in enumerate(present) if p]
        ids, images, hidden = self.conversation(clip)
        m = images.shape[1]
        targets = answer_targets(ids, int(model.tokenizer.eos_token_id), model.tokenizer)
        ce = model.llm.answer_loss(hidden, ids, targets, m)
        prompts = model.llm.seg_prompts(hidden, seg_rows(ids, model.seg_id, m))  # [P, C]
        if len(prompts) != len(segmented):
            raise RuntimeError(f"the conversation holds {len(prompts)} [SEG] for {len(segmented)} segmented query frames")

        c = model.config
        spec = model.spec
        gated = spec is not None and spec.presence_gate
        hooks = GlusHooks(c.num_maskmem, stride=1, train_memory=spec is not None and spec.train_memory, presence_gate=gated)
        session = hooks.session(model.sam, grad=True)
        high_res, scores = [], []
        for t, frame in enumerate(query):
            if not c.num_maskmem:  # no memory bank: every query frame decoded alone
                session = hooks.session(model.sam, grad=True)
            if not present[t]:
                session.skip(frame)
                continue
            hooks.prompt = prompts[len(high_res)][None, None]
            output = session.push(frame).objects[OBJ].output
            high_res.append(output.high_res)
            scores.append(output.object_score[:, 0])
        if high_res:
            size = model.sam.image_size
            masks = torch.from_numpy(clip.mask[clip.context:][segmented]).to(hidden.device, torch.float32)[:, None]
            masks = F.interpolate(masks, size=(size, size), mode="nearest")  # [P, 1, S, S]
            mask_logits = torch.cat(high_res).float()
            bce = bce_loss(mask_logits, masks)
            dice = dice_loss(mask_logits, masks, smooth=LISA_DICE_SMOOTH)
        else:
            bce = dice = ce.new_zeros(())
        loss = w.ce * ce + w.bce * bce + w.dice * dice
        out = {"ce": ce, "bce": bce, "dice": dice}
        if gated:
            out["object"] = object_score_loss(torch.cat(scores), masks.flatten(1).any(dim=1)) if high_res else ce.new_zeros(())
            loss = loss + w.object * out["object"]
        return {**out, "loss": loss}, prompts, segmented

    def readout_losses(self, batch: list[Referred]) -> tuple[dict[str, Tensor], Tensor]:
        """(losses, projected [SEG] tokens [B, C]) of a read-out step (`data.cache_features`)."""
        out, prompts = self.readout_decode(batch)
        size = self.model.sam.image_size
        masks = torch.from_numpy(np.stack([s.clip.mask[0] for s in batch])).float()[:, None]
        masks = F.interpolate(masks, size=(size, size), mode="nearest").to(out.high_res.device)  # [B, 1, S, S]
        bce = bce_loss(out.high_res.float(), masks)
        dice = dice_loss(out.high_res.float(), masks, smooth=LISA_DICE_SMOOTH)
        w = self.config.loss
        return {"ce": bce.new_zeros(()), "bce": bce, "dice": dice, "loss": w.bce * bce + w.dice * dice}, prompts

    def readout_decode(self, batch: list[Referred]) -> tuple[DecoderOutput, Tensor]:
        """Every expression's single frame decoded, in one batch, as the first frame of a GLUS pass
        (no memory, the [SEG] token as the only sparse prompt, SAM's no-mask dense prompt, one
        mask), from the kept states and features; returns the output and the tokens [B, C]."""
        model, sam = self.model, self.model.sam
        device = sam.no_memory_embedding.device
        states = torch.stack([self.seg_state(image_key(s.clip.frames[0]), s.clip) for s in batch]).to(device)  # [B, H]

        def encode(frames: Tensor) -> tuple[Tensor, ...]:
            features = sam.encode_images(SAM2.pixels(frames, sam.image_size))
            return (*features.high_res, features.embed)

        frames = torch.from_numpy(np.stack([s.clip.frames[0] for s in batch])).to(device)
        *high_res, embed = self.features(frames, encode)
        prompts = model.llm.seg_prompts(states, range(len(batch)))  # [B, C]
        sparse, dense = embed_prompts(sam.prompt_encoder, len(batch), extra=prompts[:, None])
        out = decode_masks(sam, high_res, embed + sam.no_memory_embedding.view(1, -1, 1, 1), sparse, dense,
                           GlusHooks.multimask, GlusHooks.stability_fallback, GlusHooks.presence_gate)
        return out, prompts

    @torch.no_grad()
    def seg_state(self, key: bytes, clip: Clip) -> Tensor:
        """The [SEG] state [H] of `clip`'s single frame (digest `key`) and expression, computed in eval
        mode the first time it is asked for."""
        assert self.states is not None
        text = clip.expression.text
        if (key, text) not in self.states:
            model = self.model
            mode = model.training
            model.eval()
            ids, images, hidden = self.conversation(clip)
            model.train(mode)
            self.states[key, text] = hidden[seg_rows(ids, model.seg_id, images.shape[1])[0]].float().cpu()
        return self.states[key, text]
