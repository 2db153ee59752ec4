"""SAM-I2V against its official implementation (github.com/showlab/SAM-I2V, commit 3f127ce).

`tests/fixtures/sam_i2v_official/` holds what the official video predictor computed for a tiny
random model on a 12-frame clip (two clicks on frame 0, one on frame 6, the sampler seeded 2024):
its state dict in the official key names and every frame's outputs and intermediates
(`make_fixture.py` regenerates it from a path to the official code; README.md there says how).
refseg loads the state dict with `load_official_sam_i2v` and streams the clip through its engine
with the session seeded 2024: the TFI embeddings, the memories the selector picks, the MPG tokens
and the mask logits must be the official ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg.methods.sam_i2v.checkpoint import convert_official_sam_i2v, load_official_sam_i2v
from refseg.methods.sam_i2v.model import SamI2VHooks
from refseg.engine.session import Session
from refseg.prompts import Points
from refseg.sam.checkpoint import CheckpointError
from refseg.sam.memory import memory_position_encoding, memory_tokens

FIXTURE = Path(__file__).parent / "fixtures" / "sam_i2v_official" / "sam_i2v_official.npz"
ATOL = 1e-4


def read_fixture() -> tuple[np.lib.npyio.NpzFile, dict[str, torch.Tensor]]:
    """The fixture's arrays and its official state dict (int8 codes x 2**e decoded, README.md)."""
    data = np.load(FIXTURE, allow_pickle=False)
    state = {k[len("state/"):]: torch.from_numpy(data[k].copy()) for k in data.files if k.startswith("state/")}
    for key, e in json.loads(str(data["exponents"])).items():
        state[key] = torch.from_numpy(data["codes/" + key].copy()).float() * 2.0**e
    return data, state


@pytest.fixture(scope="module")
def fixture():
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} is missing: regenerate it with tests/fixtures/sam_i2v_official/make_fixture.py")
    return read_fixture()


class Recording(SamI2VHooks):
    """SAM-I2V's hooks, keeping what each step produced per frame."""

    def __init__(self, model):
        super().__init__(model)
        self.embeds, self.readouts, self.tokens = [], {}, {}

    def encode_output(self, window, features):
        out = super().encode_output(window, features)
        self.embeds.append(out.embed[0])
        return out

    def select_memories(self, frame, obj_id, memory, features, generator):
        readout = super().select_memories(frame, obj_id, memory, features, generator)
        self.readouts[frame] = readout
        return readout

    def prompt_tokens(self, frame, obj_id, features, embed, readout, has_points):
        tokens = super().prompt_tokens(frame, obj_id, features, embed, readout, has_points)
        self.tokens[frame] = tokens[0, -self.model.config.num_queries:]
        return tokens


def run_official_clip(data, model):
    prompts = json.loads(str(data["prompts"]))
    hooks = Recording(model)
    session = Session(model.sam, hooks, seed=int(data["seed"]), num_frames=len(data["frames"]))
    results = []
    for t, frame in enumerate(data["frames"]):
        for p in prompts:
            if p["frame"] == t:
                session.add_prompt(1, Points(p["points"], p["labels"]))
        results.append(session.push(frame))
    return hooks, results


def test_official_state_dict_loads_with_every_key_placed(fixture):
    _, state = fixture
    model = load_official_sam_i2v(state, image_size=64)
    converted = convert_official_sam_i2v(state)
    assert set(converted) == set(model.state_dict())
    assert model.config.tapped_dims == (40, 320, 256) and model.config.temporal_dim == 16
    assert model.sam.hidden_dim == 64 and model.sam.config.memory_encoder_output_channels == 16
    broken = dict(state)
    del broken["memory_prompt_generator.query_embedding_fg.weight"]
    broken["memory_prompt_generator.extra.weight"] = torch.zeros(1)
    with pytest.raises((CheckpointError, KeyError), match="query_embedding_fg|missing"):
        load_official_sam_i2v(broken, image_size=64)


def test_sam_i2v_computes_what_the_official_predictor_computes(fixture):
    data, state = fixture
    model = load_official_sam_i2v(state, image_size=64)
    with torch.inference_mode():
        hooks, results = run_official_clip(data, model)
    for t, result in enumerate(results):
        f = f"frame/{t}/"
        torch.testing.assert_close(hooks.embeds[t], torch.from_numpy(data[f + "tfi"]), atol=ATOL, rtol=0,
                                   msg=lambda m: f"TFI output, frame {t}: {m}")
        torch.testing.assert_close(hooks.tokens[t], torch.from_numpy(data[f + "mpg"]), atol=ATOL, rtol=0,
                                   msg=lambda m: f"MPG tokens, frame {t}: {m}")
        if t in hooks.readouts:  # a tracked frame: the selector's memories, slots and pointers
            readout = hooks.readouts[t]
            assert readout.tpos_slots == [int(x) for x in data[f + "mem_slot"]], f"frame {t}: slots"
            assert readout.pointer_offsets == [int(x) for x in data[f + "ptr_pos"]], f"frame {t}: pointer positions"
            memory, memory_pe, pointer_tokens = memory_tokens(model.sam, readout, memory_position_encoding(model.sam),
                                                              torch.float32)
            # spatial memories are stored in bfloat16: one rounding step apart at most
            torch.testing.assert_close(memory, torch.from_numpy(data[f + "memory"]), atol=ATOL, rtol=2**-8,
                                       msg=lambda m: f"memories picked, frame {t}: {m}")
            torch.testing.assert_close(memory_pe, torch.from_numpy(data[f + "memory_pos"]), atol=ATOL, rtol=0)
            foreground = model.mpg.foreground(readout.masks, pointer_tokens)
            assert torch.equal(foreground, torch.from_numpy(data[f + "mask_fg"])), f"frame {t}: MPG mask"
        obj = result.objects[1]
        torch.testing.assert_close(obj.low_res_logits.float().reshape(16, 16), torch.from_numpy(data[f + "low_res"])[0],
                                   atol=ATOL, rtol=0, msg=lambda m: f"low-res logits, frame {t}: {m}")
        torch.testing.assert_close(obj.logits.float(), torch.from_numpy(data[f + "video_res"])[0], atol=ATOL, rtol=0,
                                   msg=lambda m: f"logits, frame {t}: {m}")
        assert obj.score == pytest.approx(float(data[f + "object_score_logits"][0]), abs=ATOL), f"frame {t}"
