"""GLUS's conversation: the text and token ids of one LLM call (paper Sec. 4.1, Fig. 2; the
official `inference_iter.py` layout).

One call segments one query frame. Its prompt is a LLaVA-v1 conversation holding the 4 context
frames (global) and a sliding window of at most 4 query frames (local), one user turn per query
frame, the current frame last:

    SYSTEM USER: <ctx> <ctx> <ctx> <ctx> CONTEXT_TEXT <q_1> QUESTION ASSISTANT: ANSWER[SEG].</s>
    USER: <q_2> QUESTION ASSISTANT: ANSWER[SEG].</s> ... USER: <q_k> QUESTION ASSISTANT: ANSWER

with every image as `<im_start><image><im_end>`. The last answer is forced up to its trailing
space; the model's next token should be `[SEG]`, and the LLM's last-layer state at the position
before each `[SEG]` is that frame's prompt embedding (LISA's shift, `seg_rows`). When the window
slides, the oldest turn leaves and the context frames move into the new first turn.

A model refseg trains with `GlusSpec.absent_answer` answers a frame where its target is not
(a null expression, an object that has not arrived yet) with `ABSENT_WORD` ("... result is empty.")
instead of `[SEG]`: the paper's model always answers [SEG], so it outlines something on every
frame.

Token ids follow LLaVA's `tokenizer_image_token` with a LLaMA (SentencePiece, legacy) tokenizer:
the text is split at the added tokens, whitespace next to an added token is dropped, every text
piece is encoded on its own (so it gets SentencePiece's leading "▁"), the BOS comes once, and each
`<image>` becomes `IMAGE_TOKEN` (-200), which stands for the image's tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")
IMAGE, IM_START, IM_END, SEG, EOS = "<image>", "<im_start>", "<im_end>", "[SEG]", "</s>"
IMAGE_BLOCK = IM_START + IMAGE + IM_END
CONTEXT_TEXT = "\nPlease finished the following tasks on the context frames above.\n"  # the official wording
QUESTION = "\nCan you segment the {} in this frame?"
ANSWER = "Sure, the segmentation result is "
ABSENT_WORD = "empty"  # the answer's last word, in place of [SEG], of a frame without the target (`GlusSpec.absent_answer`)
IMAGE_TOKEN = -200
NEW_TOKENS = (SEG, IM_START, IM_END)  # added to the LLM's vocabulary


def clean_expression(expression: str) -> str:
    """The expression as the templates hold it: stripped, one final "." dropped, lowercased."""
    text = expression.strip()
    return (text[:-1] if text.endswith(".") else text).strip().lower()


def glus_prompt(expression: str, turns: int, context_frames: int = 4, failed: Sequence[bool] = (),
                complete: bool = False, absent: bool = False) -> str:
    """The prompt of a call over `context_frames` context images and `turns` query frames (the
    window, current frame last). `failed[i]`: the i-th turn produced no [SEG]; its answer then
    reads "[SEG] ." as the official code writes it, or, with `absent` (a model trained to say so,
    `GlusSpec.absent_answer`), `ABSENT_WORD` as that model was trained. `complete`: the last answer too
    is written out in full (a training conversation, every turn answered; `failed` may then flag
    the last turn too)."""
    if turns < 1:
        raise ValueError(f"turns: at least the current frame, got {turns}")
    flagged = (0, turns - 1, turns) if complete else (0, turns - 1)
    if len(failed) not in flagged:
        raise ValueError(f"failed: one flag per earlier turn ({turns - 1}{' or every turn' if complete else ''}), "
                         f"got {len(failed)}")
    question = QUESTION.format(clean_expression(expression))
    parts = [SYSTEM + " "]
    for turn in range(turns):
        user = IMAGE_BLOCK + question
        if turn == 0 and context_frames:
            user = IMAGE_BLOCK * context_frames + CONTEXT_TEXT + user
        parts.append(f"USER: {user} ASSISTANT: ")
        if turn < turns - 1 or complete:
            missed = turn < len(failed) and failed[turn]
            parts.append(ANSWER + (ABSENT_WORD + "." if missed and absent else SEG + (" ." if missed else ".")) + EOS)
        else:
            parts.append(ANSWER)
    return "".join(parts)


def glus_input_ids(prompt: str, tokenizer: PreTrainedTokenizerBase, added: Sequence[str] = NEW_TOKENS) -> list[int]:
    """Token ids of `prompt` with `IMAGE_TOKEN` for every `<image>` (see the module docstring);
    the tokenizer must hold the `added` tokens (GLUS's `NEW_TOKENS`, or the key-frame selector's)."""
    specials = [IMAGE, *added, EOS]
    pieces = [p for p in re.split("(" + "|".join(re.escape(s) for s in specials) + ")", prompt) if p]
    ids: list[int] = []
    if tokenizer.bos_token_id is not None and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        ids.append(tokenizer.bos_token_id)
    for i, piece in enumerate(pieces):
        if piece == IMAGE:
            ids.append(IMAGE_TOKEN)
        elif piece in specials:
            ids.append(_token_id(tokenizer, piece))
        else:
            if i > 0 and pieces[i - 1] in specials:
                piece = piece.lstrip()
            if i + 1 < len(pieces) and pieces[i + 1] in specials:
                piece = piece.rstrip()
            if piece:
                ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    if token == EOS:  # the end of a turn is the tokenizer's own end-of-sequence token
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-sequence token")
        return int(tokenizer.eos_token_id)
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or index == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {token} token: add it (GLUS's added tokens: {NEW_TOKENS})")
    return int(index)


def query_start(input_ids: Sequence[int], context_frames: int) -> int:
    """Position in `input_ids` (a `glus_input_ids` call over `context_frames` context frames)
    where the first query frame's image block begins. What comes before it (the system text, the
    context frames and their text) is the same in every call over one video."""
    images = [i for i, token in enumerate(input_ids) if token == IMAGE_TOKEN]
    if len(images) <= context_frames:
        raise ValueError(f"the call holds {len(images)} images, not {context_frames} context frames and a query frame")
    return images[context_frames] - 1  # its <im_start>


def token_rows(input_ids: Sequence[int], image_tokens: int) -> list[int]:
    """Row of each token of `input_ids` in the LLM sequence once every `IMAGE_TOKEN` has become
    `image_tokens` rows (an image's own entry: the row of its first token)."""
    rows, images = [], 0
    for position, token in enumerate(input_ids):
        rows.append(position + images * (image_tokens - 1))
        images += token == IMAGE_TOKEN
    return rows


def seg_rows(input_ids: Sequence[int], seg_id: int, image_tokens: int) -> list[int]:
    """Rows of the LLM sequence whose last-layer states are the [SEG] embeddings: for each [SEG]
    in `input_ids` (the prompt and the generated tokens), the row of the token before it, once every
    earlier `IMAGE_TOKEN` has become `image_tokens` rows (LISA's shift)."""
    rows, images = [], 0
    for position, token in enumerate(input_ids):
        if token == IMAGE_TOKEN:
            images += 1
        elif token == seg_id:
            rows.append(position - 1 + images * (image_tokens - 1))
    return rows


def answer_targets(input_ids: Sequence[int], eos_id: int, tokenizer: PreTrainedTokenizerBase,
                   answer: str = ANSWER) -> list[int]:
    """Positions of the assistant's tokens in a complete conversation's ids (what the language
    loss reads, LLaVA's rule): for each end-of-sequence token (the end of an answered turn), the
    tokens from the start of `answer` ("Sure, ...", or the selector's "The score is ...") up to
    and including it, whatever the answer says after `answer` ([SEG], `ABSENT_WORD`, [SCORE])."""
    answer = answer.strip()
    targets: list[int] = []
    for end, token in enumerate(input_ids):
        if token != eos_id:
            continue
        start = end
        while answer not in tokenizer.decode(list(input_ids[start:end])):
            start -= 1
            if start < 0 or input_ids[start] in (IMAGE_TOKEN, eos_id):
                raise ValueError(f"the turn ending at token {end} holds no answer {answer!r}")
        targets.extend(range(start, end + 1))
    return targets
