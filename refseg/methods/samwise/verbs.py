"""Offline verb finder for SAMWISE's motion prompt (Sec. 3.2).

The official code tags verbs with spaCy's `en_core_web_sm`, which is not on PyPI (it downloads
from GitHub at run time), so refseg bundles a small lexicon with inflection rules instead: about
200 verb lemmas common in referring expressions of motion (MeViS, Ref-YouTube-VOS, SynthRef),
their regular inflections (-s, -es, -ing, -ed with e-drop and consonant doubling), irregular
past forms, and three context rules: a form that is not -ing right after a determiner, a possessive or a
common adjective is a noun ("the sound", "its move", "red circle"), and words that are also
directions or adjectives ("left", "still", "set") are verbs only after an auxiliary or a
relative pronoun ("that sets off", "has left").
"""

from __future__ import annotations

import re

LEMMAS = """
accelerate approach arrive attack bark bend bite blink bounce bow bump buzz beep carry catch chase
chew circle climb close come crash crawl cross cry cut dance dart descend dig dive drag drink drive drop
duck eat emerge enter escape exit fall feed fight flap flee flip float fly follow gallop get glide go grab
graze groom grow hang head hide hit hold hop hover hum hunt jog jump kick kneel knock land laugh lay lead
lean leap leave lick lie lift look make move nod open overtake paddle pass pat peck pick play point pounce
pour pull punch push race raise reach read rest ride rise roar roll rotate rub run rush sail scratch shake
show shrink sing sink sit skate ski skip slide slip slow smell sniff sound spin splash spread sprint stand
start stay step stick stomp stop stretch strike stroll surf swim swing swoop take talk throw touch tow
track travel trot turn twist wag walk wander watch wave wiggle win write yawn begin set keep fetch put
shoot swerve zigzag tumble tilt shuffle march squat crouch drift sway shift speed stumble stagger
""".split()

IRREGULAR = """
ran run sat stood flew ate fell went gone came took held hid hung led left lay lain rode rose risen sang
sank slid spun stuck struck swam swung threw thrown wrote written drove driven dove dug fought fled caught
bit bitten began begun kept made shook shaken shot put set got won read drank drunk grew grown leapt
""".split()

AMBIGUOUS = {"left", "still", "set", "lay", "read", "put", "shot", "run"}  # also nouns, adjectives, directions
DETERMINERS = {"the", "a", "an", "no", "this", "these", "those", "its", "his", "her", "their", "our", "my",
               "your", "every", "each", "some", "any", "another"}
ADJECTIVES = {"red", "green", "blue", "yellow", "white", "black", "brown", "grey", "gray", "pink", "purple", "orange",
              "dark", "light", "big", "small", "large", "medium", "little", "tiny", "huge", "other", "same", "first",
              "last", "left", "right", "loud", "loudest", "quiet", "silent", "motionless", "striped", "dotted",
              "plain", "high-pitched", "low-pitched", "young", "old", "new", "whole", "full"}
AUXILIARIES = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "that", "which", "who",
               "to", "will", "can", "does", "do", "did", "not", "just", "then", "and"}
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def _forms(lemma: str) -> set[str]:
    """Regular inflections of a lemma."""
    forms = {lemma}
    forms.add(lemma + "es" if re.search(r"(s|sh|ch|x|z|o)$", lemma) else
              lemma[:-1] + "ies" if re.search(r"[^aeiou]y$", lemma) else lemma + "s")
    stem = lemma[:-1] if lemma.endswith("e") and not lemma.endswith(("ee", "ye", "oe")) else lemma
    if re.search(r"[^aeiou][aeiou][bdgklmnprt]$", lemma) and len(lemma) <= 4:
        stem = lemma + lemma[-1]  # run -> running, stop -> stopped
    forms.add(stem + "ing")
    forms.add(lemma + "d" if lemma.endswith("e") else lemma[:-1] + "ied" if re.search(r"[^aeiou]y$", lemma)
              else stem + "ed")
    return forms


VERB_FORMS = frozenset(set().union(*(_forms(lemma) for lemma in LEMMAS)) | set(IRREGULAR))


def verb_spans(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the verbs in `text`."""
    spans = []
    words = [(m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(text)]
    for i, (word, start, end) in enumerate(words):
        if word not in VERB_FORMS:
            continue
        previous = words[i - 1][0] if i > 0 else ""
        if (previous in DETERMINERS or previous in ADJECTIVES) and not word.endswith("ing"):
            continue
        if word in AMBIGUOUS and previous not in AUXILIARIES:
            continue
        spans.append((start, end))
    return spans


def verbs(text: str) -> list[str]:
    """The verbs of `text`, lower-case, in order."""
    return [text[a:b].lower() for a, b in verb_spans(text)]
