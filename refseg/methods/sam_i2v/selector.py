"""SAM-I2V Memory Selective Associator: the memory selector (paper Sec. 3.3, Fig. 4).

SAM 2 attends to the last N - 1 frames. SAM-I2V keeps the prompted frames and draws the rest
from a longer past: a local pool (frames [t - 4, t)) and a global pool (frames [t - 20, t - 4))
of unprompted frames, sampled without replacement with probabilities softmax(S), where S is the
cosine similarity between each candidate's image embedding (the TFI output) and the current
frame's, both flattened whole (paper: S = F I_t, D = softmax(S), i_k ~ D). The draw uses the
session's seeded generator, so a seed fixes the masks.

The readout follows the official inference code (`I2VBase._prepare_memory_conditioned_features`),
which differs from SAM 2 in how selected memories are told apart:
- temporal slots by rank, not distance: prompted frames t_pos 0, global picks 1 .. g (oldest
  first), local picks g + 1 .. g + l; slot = N - 1 - t_pos;
- object pointers at pseudo-distances: prompted frames (at or before t) L + 1, global pick i
  L + 1 - i, local pick i (counted from g + 1) L + 1 - i, normalised by L + 1, where
  L = min(t - 1, g + l);
- while fewer than L unprompted frames were picked (the first frames of a video), the first
  prompted memory is repeated in front until there are L, and the first pointer until there are
  as many pointers as memories (the official code pads so for batching; kept for parity).
Training does not select: it reads SAM 2's consecutive memory, as the official training does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.engine.memory_bank import MemoryEntry, ObjectMemory
from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.sam.memory import MemoryReadout


def sample_pool(candidates: list[MemoryEntry], key: Tensor, picks: int, uniform: bool,
                generator: torch.Generator) -> list[MemoryEntry]:
    """Draw min(`picks`, len(candidates)) entries without replacement, returned oldest first.

    Probabilities: softmax over the cosine similarity of each candidate's `key` [C, h, w] with
    `key` (the current frame's), flattened whole; equal when `uniform`. One `torch.multinomial`
    call on `generator` whenever there is a candidate and a pick, as the official code draws.
    """
    if not candidates or picks <= 0:
        return []
    keys = torch.stack([_key(e) for e in candidates]).flatten(1).float()  # [M, C*h*w]
    similarity = F.normalize(keys, dim=1) @ F.normalize(key.flatten().float(), dim=0)  # [M]
    probs = torch.full_like(similarity, 1.0 / len(candidates)) if uniform else F.softmax(similarity, dim=0)
    drawn = torch.multinomial(probs, min(picks, len(candidates)), replacement=False, generator=generator)
    return [candidates[i] for i in sorted(drawn.tolist())]


def _key(entry: MemoryEntry) -> Tensor:
    if entry.key is None:
        raise RuntimeError(f"memory of frame {entry.frame} has no key: the bank must store keys (store_keys)")
    return entry.key


def select(frame: int, memory: ObjectMemory, key: Tensor, config: SamI2VConfig, num_maskmem: int,
           generator: torch.Generator, past_pointers_only: bool = True) -> MemoryReadout:
    """The memories one object attends to on `frame` (see the module docstring).

    Args:
        frame: the current frame t (the session's frame index).
        memory: the object's bank, keeping at least the last local_pool + global_pool frames.
        key: [C, h, w] the current frame's image embedding.
        config: pool sizes and picks; `selection` "uniform" draws uniformly.
        num_maskmem: N, the temporal encodings (slots 0 .. N - 1).
        past_pointers_only: pointers of prompted frames only at or before t (inference).
    """
    g, l = config.global_picks, config.local_picks
    uniform = config.selection == "uniform"
    prompted, _ = memory.select_prompted(frame)
    local_from = frame - config.local_pool
    global_picks = sample_pool(memory.recent_before(local_from, local_from - config.global_pool), key, g,
                               uniform, generator)
    local_picks = sample_pool(memory.recent_before(frame, local_from), key, l, uniform, generator)
    # (t_pos, entry): prompted 0, global 1 .. g, local g + 1 .. g + l
    chosen = [(0, e) for e in prompted.values()]
    chosen += [(i, e) for i, e in enumerate(global_picks, 1)]
    chosen += [(i, e) for i, e in enumerate(local_picks, g + 1)]
    length = frame - 1 if frame <= g + l else g + l  # L
    picked = len(global_picks) + len(local_picks)
    if picked < length:
        chosen = [chosen[0]] * (length - picked) + chosen
    out = MemoryReadout(pointer_span=length + 1)
    for t_pos, entry in chosen:
        if entry.features is None:
            raise RuntimeError(f"memory of frame {entry.frame} has no features")
        out.add_memory(entry.features, num_maskmem - 1 - t_pos, entry.kv, entry.mask)
    pointers = [(length + 1, e) for t, e in prompted.items() if t <= frame or not past_pointers_only]
    pointers += [(length + 1 - i, e) for i, e in enumerate(global_picks, 1)]
    pointers += [(length + 1 - i, e) for i, e in enumerate(local_picks, g + 1)]
    if pointers and len(pointers) < len(chosen):
        pointers = [pointers[0]] * (len(chosen) - len(pointers)) + pointers
    for position, entry in pointers:
        out.add_pointer(entry.pointer, position)
    return out
