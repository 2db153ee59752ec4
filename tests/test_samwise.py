"""SAMWISE: adapters, HSA, prompt, CME and streaming, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_sam2, synthetic_video
from transformers import AutoTokenizer, BertConfig, BertModel

from refseg.encoders.text import TextEncoder, minilm_path
from refseg.engine import Session
from refseg.methods.samwise import Samwise, SamwiseConfig
from refseg.methods.samwise.adapter import HierarchicalSelectiveAttention
from refseg.methods.samwise.cme import fuse_masks, switch_labels
from refseg.methods.samwise.prompt import TextPrompt, verb_token_mask
from refseg.methods.samwise.verbs import verbs


def tiny_text_encoder(seed: int = 0) -> TextEncoder:
    """A random 4-layer BERT (width 32) with MiniLM's tokenizer."""
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                        vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return TextEncoder(BertModel(config, add_pooling_layer=False).eval(), AutoTokenizer.from_pretrained(minilm_path()))


def tiny_samwise(seed: int = 0, **config) -> Samwise:
    model = Samwise(random_sam2(seed), tiny_text_encoder(seed), SamwiseConfig(clip_len=4, **config))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make the CME decide sometimes: random non-trivial weights
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_adapter_shapes_and_trainable_fraction():
    model = tiny_samwise()
    assert model.text_layers == [1, 3, 4]  # thirds of 4 layers, rounded
    visual, text = torch.randn(3, 16, 16, 32), torch.randn(1, 5, 32)
    v, t = model.adapters[0](visual, text)
    assert v.shape == visual.shape and t.shape == text.shape
    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < total
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"adapters", "prompt", "cme"}


def test_zero_up_projections_leave_both_encoders_unchanged():
    model = tiny_samwise(cme=False)
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.up_v.weight.zero_()
            adapter.up_v.bias.zero_()
            adapter.up_t.weight.zero_()
    frames = torch.from_numpy(synthetic_video(4))
    pixels = torch.cat([torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(128, 128))])
    hooks = model.hooks("the disk moving right")
    with torch.no_grad():
        adapted = model.sam.encode_images(pixels, hooks.encode_stage)
        stock = model.sam.encode_images(pixels)
        text = model.text(hooks.text.tokens)
    assert torch.equal(adapted.embed, stock.embed)
    assert all(torch.equal(a, b) for a, b in zip(adapted.high_res, stock.high_res))
    assert torch.equal(hooks.text._hidden, text)


def test_hsa_equals_attention_within_each_subvolume():
    torch.manual_seed(0)
    hsa = HierarchicalSelectiveAttention(dim=16, patch=2, heads=2, dropout=0.0).eval()
    x = torch.randn(3, 4, 6, 16)  # T=3, 4x6 map, P=2: six sub-volumes of 12 tokens
    with torch.no_grad():
        out = hsa(x)
        expected = x.clone()
        t_pos = torch.stack([torch.tensor([np.sin((k + 1) / 3 * 2 * np.pi / 10000 ** (2 * (c // 2) / 16))
                                           if c % 2 == 0 else np.cos((k + 1) / 3 * 2 * np.pi / 10000 ** (2 * (c // 2) / 16))
                                           for c in range(16)], dtype=torch.float32) for k in range(3)])
        for by in range(2):
            for bx in range(3):
                tokens, where = [], []
                for t in range(3):
                    for i in range(2):
                        for j in range(2):
                            y, xx = 2 * by + i, 2 * bx + j
                            tokens.append(x[t, y, xx] + t_pos[t] + hsa.spatial_pos[i * 2 + j])
                            where.append((t, y, xx))
                seq = hsa.norm(torch.stack(tokens))[None]
                att = hsa.linear(hsa.attn(seq, seq, seq)[0])[0]
                for k, (t, y, xx) in enumerate(where):
                    expected[t, y, xx] = x[t, y, xx] + att[k]
    assert torch.allclose(out, expected, atol=1e-5)


def test_cme_fusion_and_labels_by_hand():
    p_m = torch.tensor([[[[3.0, -2.0], [1.0, -5.0]]]])
    p_l = torch.tensor([[[[-1.0, 0.5], [2.0, 0.0]]]])
    # Eq. 10 with lambda = 10: where P_l > 0 take 10 P_l, elsewhere P_m
    assert torch.equal(fuse_masks(p_m, p_l, 10.0), torch.tensor([[[[3.0, 5.0], [20.0, -5.0]]]]))
    a = torch.full((3, 1, 4, 4), -1.0)
    b = torch.full((3, 1, 4, 4), -1.0)
    a[0, 0, :2, :2] = 1  # sample 0: disjoint masks -> switch
    b[0, 0, 2:, 2:] = 1
    a[1, 0, :2, :2] = 1  # sample 1: same mask -> keep
    b[1, 0, :2, :2] = 1
    a[2, 0, 0, 0] = 1  # sample 2: memory-less prediction says absent -> ignored
    b[2, 0, 3, 3] = 1
    labels = switch_labels(a, b, torch.tensor([[1.0], [1.0], [-1.0]]), min_pixels=1)
    assert labels.tolist() == [1, 0, -1]
    tiny = switch_labels(a[:1], b[:1], torch.tensor([[1.0]]), min_pixels=4)  # both masks <= 4 px
    assert tiny.tolist() == [-1]


def test_motion_prompt_pools_the_verb_tokens():
    encoder = tiny_text_encoder()
    tokens = encoder.tokenize(["the dog running fast"])
    mask = verb_token_mask(tokens)
    words = [encoder.tokenizer.decode([int(i)]) for i, m in zip(tokens.ids[0], mask[0]) if m]
    assert "".join(w.replace("##", "") for w in words) == "running"
    prompt = TextPrompt(32, 16, motion=True)
    hidden = torch.randn(1, tokens.ids.shape[1], 32)
    rho = prompt(hidden, encoder.sentence_index(tokens), mask)
    manual = torch.cat([hidden[0, 0], hidden[0][mask[0]].mean(0)])
    for i, layer in enumerate(prompt.layers):
        manual = layer(manual)
        manual = torch.relu(manual) if i < 2 else manual
    assert rho.shape == (1, 1, 16) and torch.allclose(rho[0, 0], manual, atol=1e-6)


def test_verb_finder():
    assert verbs("the red circle coming in later") == ["coming"]
    assert verbs("the object making the high-pitched sound") == ["making"]
    assert verbs("the square on the left side of the red circle") == []
    assert verbs("the bird flies up and lands") == ["flies", "lands"]
    assert verbs("the diamond that sets off late") == ["sets"]
    assert verbs("the triangle which begins to move after a while") == ["begins", "move"]


def test_streaming_frame_by_frame_equals_the_offline_clip():
    model = tiny_samwise()
    frames = synthetic_video(11)
    stream = model.stream(["the disk", "the square moving left"], batch=1)
    streamed = []
    for frame in frames:
        streamed += stream.push(frame)
    streamed += stream.flush()
    assert [r.index for r in streamed] == list(range(11))
    for obj_id, text in [(1, "the disk"), (2, "the square moving left")]:
        session = Session(model.sam, model.hooks(text))
        session.add_object(obj_id)
        offline = session.push_clip(frames[:4]) + session.push_clip(frames[4:8]) + session.push_clip(frames[8:])
        for a, b in zip(streamed, offline):
            assert torch.equal(a.objects[obj_id].logits, b.objects[obj_id].logits)


def test_expressions_encoded_in_one_batch_equal_each_on_its_own():
    """Batched expressions (texts of different lengths, so padded; the CME on, with policy
    "always" so that the memory-less decode runs too) give each expression the logits it gets
    alone, to float rounding, over clips through memory and a shorter last clip."""
    model = tiny_samwise(cme_policy="always")
    frames = synthetic_video(11)
    texts = ["the disk", "the small red square moving left quickly", "it", "the square"]

    def run(batch: int) -> list:
        stream = model.stream(texts, batch=batch)
        out = []
        for frame in frames:
            out += stream.push(frame)
        return out + stream.flush()

    alone, together, pairs = run(1), run(4), run(3)  # 3: a batch of three, then one
    assert [r.index for r in together] == list(range(11))
    for a, b, c in zip(alone, together, pairs):
        for obj_id in range(1, len(texts) + 1):
            x = a.objects[obj_id]
            for y in (b.objects[obj_id], c.objects[obj_id]):
                torch.testing.assert_close(y.logits, x.logits, atol=1e-4, rtol=1e-4)
                assert y.score == pytest.approx(x.score, abs=1e-4)
    # the features differ per expression: the masks are not all one
    logits = [alone[5].objects[o].logits for o in range(1, 5)]
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)
    # without adapters the features do not depend on the text: one copy serves every expression
    plain = tiny_samwise(adapters=False)
    streams = [plain.stream(texts[:3], batch=b) for b in (1, 3)]
    outs = [[r for f in frames[:5] for r in s.push(f)] + s.flush() for s in streams]
    for a, b in zip(*outs):
        for obj_id in (1, 2, 3):
            torch.testing.assert_close(b.objects[obj_id].logits, a.objects[obj_id].logits, atol=1e-4, rtol=1e-4)


def test_adapter_on_several_expressions_adapts_each_copy_by_its_own():
    model = tiny_samwise()
    adapter = model.adapters[0]
    tokens = model.text.tokenize(["a", "the long expression here"])
    torch.manual_seed(0)
    c = adapter.down_v.in_features
    clip = torch.randn(4, 16, 16, c)
    text = torch.randn(2, tokens.ids.shape[1], model.text.hidden_size)
    padding = tokens.mask == 0
    visual, adapted = adapter(clip.repeat(2, 1, 1, 1), text, padding)
    for e in range(2):
        length = int(tokens.mask[e].sum())
        one_v, one_t = adapter(clip, text[e : e + 1, :length], None)
        torch.testing.assert_close(visual[4 * e : 4 * e + 4], one_v, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(adapted[e : e + 1, :length], one_t, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not 3 clips"):
        adapter(clip, text.repeat(2, 1, 1)[:3], None)


def test_cme_decides_and_fuses_into_memory_only():
    model = tiny_samwise()
    frames = synthetic_video(12)
    hooks = model.hooks("the disk")
    hooks.train_cme = True
    session = Session(model.sam, hooks)
    session.add_object(1)
    session.push_clip(frames[:4])
    assert hooks.cme_records == []  # the first cme_window frames never decide
    session.push_clip(frames[4:12])
    assert len(hooks.cme_records) >= 2
    logits, labels = hooks.cme_records[0]
    assert logits.shape == (1, 2) and labels.shape == (1,) and int(labels) in (-1, 0, 1)
    assert hooks.switches == sum(int(r[0].softmax(-1)[0, 1] > 0.5) for r in hooks.cme_records)


@pytest.mark.parametrize("flags", [dict(adapters=False), dict(hsa=False), dict(vta=False, hsa=False),
                                   dict(tva=False), dict(motion=False, cme=False)])
def test_ablation_variants_run(flags):
    model = tiny_samwise(**flags)
    results = model.stream(["the disk"]).push(synthetic_video(4)[0])
    assert results == []  # buffered until the clip is full
    stream = model.stream(["the disk"])
    out = [r for f in synthetic_video(4) for r in stream.push(f)]
    assert len(out) == 4 and out[0].objects[1].mask.shape == (96, 128)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_samwise()
    model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    loaded = Samwise.from_pretrained(tmp_path / "m", text=model.text)
    for name, p in model.state_dict().items():
        if not name.startswith("text."):
            assert torch.equal(loaded.state_dict()[name], p.half().float()) if p.is_floating_point() else True
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left beside it


def test_save_with_a_sam2_source_stores_only_samwise_modules(tmp_path):
    from safetensors.torch import load_file

    model = tiny_samwise()
    model.sam.save_pretrained(tmp_path / "sam2")
    model.save_pretrained(tmp_path / "m", sam2_source=str(tmp_path / "sam2"))
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert stored and not any(k.startswith(("sam.", "text.")) for k in stored)
    loaded = Samwise.from_pretrained(tmp_path / "m", text=model.text)
    for name, p in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name


def _official_samwise_state(model: Samwise, official_sam: dict, seed: int = 0) -> dict:
    """A state dict in the official SAMWISE names and layouts (fairseq RoBERTa, Conv + BatchNorm
    projections, `transformerBlock` CME), with random values."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.1

    state = {f"sam.{k}": v for k, v in official_sam.items()}
    width, dim = model.text.hidden_size, model.config.adapter_dim
    for i, layer in enumerate(model.prompt.layers):
        state[f"sam.sam_prompt_encoder.project_text.layers.{i}.weight"] = rand(*layer.weight.shape)
        state[f"sam.sam_prompt_encoder.project_text.layers.{i}.bias"] = rand(*layer.bias.shape)
    t = "text_encoder.model.encoder.sentence_encoder."
    state["text_encoder._float_tensor"] = torch.zeros(1)
    state[t + "embed_tokens.weight"] = rand(50, width)
    state[t + "embed_positions.weight"] = rand(20, width)
    state[t + "layernorm_embedding.weight"], state[t + "layernorm_embedding.bias"] = 1 + rand(width), rand(width)
    for n in range(model.text.num_layers):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"{t}layers.{n}.self_attn.{proj}.weight"] = rand(width, width)
            state[f"{t}layers.{n}.self_attn.{proj}.bias"] = rand(width)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            state[f"{t}layers.{n}.{norm}.weight"], state[f"{t}layers.{n}.{norm}.bias"] = 1 + rand(width), rand(width)
        state[f"{t}layers.{n}.fc1.weight"], state[f"{t}layers.{n}.fc1.bias"] = rand(64, width), rand(64)
        state[f"{t}layers.{n}.fc2.weight"], state[f"{t}layers.{n}.fc2.bias"] = rand(width, 64), rand(width)
    state["text_encoder.model.encoder.lm_head.bias"] = rand(50)
    for k, adapter in enumerate(model.adapters):
        a = f"cmt_adapters.{k}."
        cv = adapter.down_v.weight.shape[1]
        state[a + "proj_vis_down.0.weight"] = rand(dim, cv, 1, 1)
        state[a + "proj_vis_up.0.weight"] = rand(dim, cv, 1, 1)
        for part, n in (("proj_vis_down", dim), ("proj_vis_up", cv)):
            state[f"{a}{part}.1.weight"], state[f"{a}{part}.1.bias"] = 1 + rand(n), rand(n)
            state[f"{a}{part}.1.running_mean"], state[f"{a}{part}.1.running_var"] = rand(n), 1 + rand(n).abs()
            state[f"{a}{part}.1.num_batches_tracked"] = torch.tensor(7)
        state[a + "proj_text_down.0.weight"], state[a + "proj_text_up.0.weight"] = rand(dim, width), rand(width, dim)
        for att in ("ca_V2T.multihead_attn.", "ca_T2V.multihead_attn.", "hsa.self_attn."):
            state[a + att + "in_proj_weight"], state[a + att + "in_proj_bias"] = rand(3 * dim, dim), rand(3 * dim)
            state[a + att + "out_proj.weight"], state[a + att + "out_proj.bias"] = rand(dim, dim), rand(dim)
        state[a + "hsa.linear.weight"], state[a + "hsa.linear.bias"] = rand(dim, dim), rand(dim)
        state[a + "spatial_pos_embed"] = rand(1, 1, 1, model.config.patches[k] ** 2, dim)
        state[a + "norm_pre_HSA.weight"], state[a + "norm_pre_HSA.bias"] = 1 + rand(dim), rand(dim)
    c = "conditional_memory_encoder."
    state[c + "transformerBlock.self_attn.in_proj_weight"] = rand(768, 256)
    state[c + "transformerBlock.self_attn.in_proj_bias"] = rand(768)
    state[c + "transformerBlock.self_attn.out_proj.weight"] = rand(256, 256)
    state[c + "transformerBlock.self_attn.out_proj.bias"] = rand(256)
    state[c + "transformerBlock.linear1.weight"], state[c + "transformerBlock.linear1.bias"] = rand(128, 256), rand(128)
    state[c + "transformerBlock.linear2.weight"], state[c + "transformerBlock.linear2.bias"] = rand(256, 128), rand(256)
    for norm in ("norm1", "norm2", "norm3"):
        state[f"{c}transformerBlock.{norm}.weight"], state[f"{c}transformerBlock.{norm}.bias"] = 1 + rand(256), rand(256)
    state[c + "decision_token.weight"] = rand(1, 256)
    state[c + "decision_class_head.weight"], state[c + "decision_class_head.bias"] = rand(2, 256), rand(2)
    return {f"module.{k}": v for k, v in state.items()}  # as saved from DistributedDataParallel


def test_official_checkpoint_layout_round_trip(tmp_path):
    from test_checkpoint import matching_config, official_tiny_sam2

    from refseg.methods.samwise.checkpoint import load_official_samwise
    from refseg.sam import Sam2

    text = tiny_text_encoder()
    text.model.config.num_hidden_layers = 3
    config = SamwiseConfig(text_encoder="roberta", text_layers=[1, 2, 3], motion=False, adapter_dim=16, heads=2,
                           clip_len=4)
    official = official_tiny_sam2()
    shape_model = Samwise(Sam2(matching_config()), TextEncoder(text.model, None), config)
    shape_model.text.model.encoder.layer = shape_model.text.model.encoder.layer[:3]
    state = _official_samwise_state(shape_model, official.state_dict())
    path = tmp_path / "samwise.pth"
    torch.save({"model": state, "epoch": 3}, path)
    model = load_official_samwise(path, tokenizer=minilm_path(), config=config, sam2_config=matching_config())
    ours = model.state_dict()
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    # renamed tensors arrive unchanged
    assert torch.equal(ours["prompt.layers.2.bias"], plain["sam.sam_prompt_encoder.project_text.layers.2.bias"])
    assert torch.equal(ours["adapters.1.vta.attn.in_proj_weight"], plain["cmt_adapters.1.ca_V2T.multihead_attn.in_proj_weight"])
    assert torch.equal(ours["adapters.2.hsa.spatial_pos"], plain["cmt_adapters.2.spatial_pos_embed"][0, 0, 0])
    assert torch.equal(ours["cme.norm2.weight"], plain["conditional_memory_encoder.transformerBlock.norm3.weight"])
    assert torch.equal(ours["text.model.encoder.layer.2.output.dense.weight"],
                       plain["text_encoder.model.encoder.sentence_encoder.layers.2.fc2.weight"])
    assert torch.equal(ours["sam.no_memory_embedding"], plain["sam.no_mem_embed"])
    # the folded projections compute what Conv + BatchNorm (inference) + ReLU computes
    a = "cmt_adapters.0."
    x = torch.randn(2, 5, 5, model.adapters[0].down_v.weight.shape[1])
    conv = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), plain[a + "proj_vis_down.0.weight"])
    bn = torch.nn.functional.batch_norm(conv, plain[a + "proj_vis_down.1.running_mean"], plain[a + "proj_vis_down.1.running_var"],
                                        plain[a + "proj_vis_down.1.weight"], plain[a + "proj_vis_down.1.bias"])
    assert torch.allclose(torch.relu(model.adapters[0].down_v(x)), torch.relu(bn).permute(0, 2, 3, 1), atol=1e-5)
    y = torch.randn(2, 5, 5, 16)
    convt = torch.nn.functional.conv_transpose2d(y.permute(0, 3, 1, 2), plain[a + "proj_vis_up.0.weight"])
    bn = torch.nn.functional.batch_norm(convt, plain[a + "proj_vis_up.1.running_mean"], plain[a + "proj_vis_up.1.running_var"],
                                        plain[a + "proj_vis_up.1.weight"], plain[a + "proj_vis_up.1.bias"])
    assert torch.allclose(model.adapters[0].up_v(y), bn.permute(0, 2, 3, 1), atol=1e-5)
    # a key the mapping does not know is named
    from refseg.sam.checkpoint import CheckpointError

    torch.save({"model": {**state, "cmt_adapters.0.gate": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="cmt_adapters.0.gate"):
        load_official_samwise(path, tokenizer=minilm_path(), config=config, sam2_config=matching_config())


def test_cme_policies_fuse_never_always_or_one_frame_in_four():
    frames = synthetic_video(20)
    masks = {}
    for policy in ("never", "always", "random"):
        model = tiny_samwise(cme_policy=policy)
        with torch.no_grad():
            stream = model.stream(["the disk"])
            results = [r for f in frames for r in stream.push(f)] + stream.flush()
        masks[policy] = [r.objects[1].logits for r in results]
        hooks = stream.sessions[1].hooks
        if policy == "always":  # every frame after the first cme_window (4) frames
            assert hooks.switches == 20 - 1 - 4
        elif policy == "random":  # frames 5..19, each with probability 1/4
            assert 0 < hooks.switches < 20 - 1 - 4
        elif policy == "never":
            assert hooks.switches == 0
    no_cme = tiny_samwise(cme=False)
    with torch.no_grad():
        stream = no_cme.stream(["the disk"])
        plain = [r.objects[1].logits for f in frames for r in stream.push(f)]
    assert all(torch.equal(a, b) for a, b in zip(masks["never"], plain))  # never = no CME
    assert not all(torch.equal(a, b) for a, b in zip(masks["always"], masks["never"]))  # fusing changes memory
    with pytest.raises(ValueError, match="cme_policy must be one of"):
        tiny_samwise(cme_policy="sometimes")
