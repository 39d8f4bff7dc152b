"""Label phrasings for the contrastive stage and, kept apart, the held-out ones zero-shot evaluation uses."""
from __future__ import annotations

SHAPE_DESCRIPTIONS = {  # training-time synonyms, so the text tower learns what a shape *is*, not one word
    "circle": ["a circle", "a round shape", "a circular shape", "a shape with no corners", "a disc"],
    "rectangle": ["a rectangle", "a box shape", "a rectangular shape", "a shape with four corners", "a four-sided shape"],
    "triangle": ["a triangle", "a triangular shape", "a shape with three corners", "a three-sided shape", "a wedge"],
}
COLOUR_TEMPLATES = ["a {c} shape", "a photo of a {c} object", "the colour {c}", "{c}", "a {c} thing"]
BOTH_TEMPLATES = ["a {c} {s}", "a photo of a {c} {s}", "a {s} coloured {c}"]
FACE_PHRASES = {
    "smile": ["a smiling face", "a happy face", "a face with a smile"],
    "frown": ["a frowning face", "a sad face", "a face with a frown"],
    "flat": ["a face with a straight mouth", "a neutral face", "a plain face"],
}

# Never used in training: templates and word combinations the text tower has not seen as phrases.
HELD_OUT_COLOUR_TEMPLATE = "something {c}"
HELD_OUT_SHAPE_PHRASES = {
    "circle": "something round",
    "rectangle": "a four-cornered figure",
    "triangle": "a three-cornered shape",
}


def all_training_phrases(colours, shapes) -> list[str]:
    phrases = [t.format(c=c) for t in COLOUR_TEMPLATES for c in colours]
    phrases += [p for s in shapes for p in SHAPE_DESCRIPTIONS[s]]
    phrases += [t.format(c=c, s=s) for t in BOTH_TEMPLATES for c in colours for s in shapes]
    return phrases + [p for ps in FACE_PHRASES.values() for p in ps]


def held_out_phrases(colours, shapes) -> tuple[dict[str, str], dict[str, str]]:
    """(colour → phrase, shape → phrase); asserted disjoint from every training phrase."""
    colour_phrases = {c: HELD_OUT_COLOUR_TEMPLATE.format(c=c) for c in colours}
    shape_phrases = {s: HELD_OUT_SHAPE_PHRASES[s] for s in shapes}
    seen = set(all_training_phrases(colours, shapes))
    overlap = seen & (set(colour_phrases.values()) | set(shape_phrases.values()))
    if overlap:
        raise AssertionError(f"held-out phrasings leaked into training: {overlap}")
    return colour_phrases, shape_phrases
