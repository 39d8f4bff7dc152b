"""A generated image + text sentiment set in which neither modality alone gives the label.

The image carries a sentiment through a face's mouth (smile -> positive, frown -> negative);
a neutral image is a flat-mouthed face or a plain shape scene. The text carries one through
generated sentences from positive, negative and neutral templates.

Label rule (`combined_label`):
* both neutral -> "neutral";
* one neutral -> the other one's sentiment;
* both the same sentiment -> that sentiment;
* conflicting signals (one positive, one negative) are "mixed", labelled **neutral**.

Subsets: "image_decides" (neutral text, sentiment image), "text_decides" (neutral image,
sentiment text), "agree", "neutral" (both neutral) and "conflict" (opposite sentiments).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image

from multimodal.data.scenes import draw_face, generate_scene

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
SUBSET_SHARES: dict[str, float] = {
    "image_decides": 0.25,
    "text_decides": 0.25,
    "agree": 0.20,
    "neutral": 0.15,
    "conflict": 0.15,
}
MOUTH_FOR = {"positive": "smile", "negative": "frown", "neutral": "flat"}
OPPOSITE = {"positive": "negative", "negative": "positive"}

# Slot fillers. A template names a slot as {name} or {name2} (a second, independent draw).
SLOT_WORDS: dict[str, tuple[str, ...]] = {
    "pos_adj": ("wonderful", "great", "amazing", "lovely", "fantastic", "beautiful", "brilliant",
                "delightful", "perfect", "awesome", "excellent", "gorgeous", "charming", "superb"),
    "neg_adj": ("terrible", "awful", "horrible", "dreadful", "disappointing", "ugly", "boring",
                "gross", "nasty", "lousy", "depressing", "annoying", "painful", "pathetic"),
    "pos_verb": ("love", "adore", "enjoy", "like", "treasure", "appreciate"),
    "neg_verb": ("hate", "despise", "dislike", "loathe", "regret", "resent"),
    "pos_feel": ("happy", "thrilled", "glad", "delighted", "excited", "grateful", "proud", "cheerful"),
    "neg_feel": ("sad", "angry", "upset", "furious", "annoyed", "miserable", "gloomy", "frustrated"),
    "thing": ("picture", "photo", "view", "room", "book", "film", "song", "shirt", "car", "garden",
              "bike", "painting", "jacket", "phone", "hotel", "show"),
    "food": ("coffee", "pizza", "cake", "soup", "pasta", "salad", "bread", "tea", "burger", "ice cream"),
    "place": ("park", "beach", "station", "office", "market", "museum", "library", "cafe", "airport",
              "mall", "zoo", "lake", "stadium", "school"),
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "part": ("morning", "afternoon", "evening", "weekend"),
    "clock": ("3pm", "9am", "noon", "midnight", "7pm", "10am", "half past two", "six"),
    "person": ("my friend", "my sister", "my brother", "my mom", "my dad", "the kids", "my boss",
               "our neighbour", "my cousin"),
    "event": ("trip", "holiday", "party", "visit", "concert", "match", "dinner", "walk"),
    "number": ("two", "three", "four", "five", "ten", "twenty"),
}  # fmt: skip

TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "i {pos_verb} this {thing}", "what a {pos_adj} {part} at the {place}", "the {thing} was {pos_adj}",
        "{pos_adj} {thing} today", "best {event} ever", "so {pos_feel} right now",
        "feeling {pos_feel} at the {place}", "this {thing} is {pos_adj}", "i {pos_verb} the {place} on {day}",
        "{person} made this {thing} and it is {pos_adj}", "such a {pos_adj} view from the {place}",
        "we had a {pos_adj} {event}", "{pos_adj} {event} with {person}", "really {pos_feel} about this {thing}",
        "the {place} was {pos_adj} this {part}", "i {pos_verb} how this {thing} turned out",
        "could not be more {pos_feel}", "{person} and i {pos_verb} this {place}", "this made my {part}",
        "{pos_adj} {part} at the {place}", "absolutely {pos_adj}", "what a {pos_adj} {thing}",
        "i am so {pos_feel} with this {thing}", "the best {event} at the {place}",
        "we {pos_verb} every minute at the {place}", "my new {thing} is {pos_adj}", "{day} was {pos_adj}",
        "so {pos_feel} to be at the {place} on {day}", "everything about this {thing} is {pos_adj}",
        "a {pos_adj} {thing} from {person}", "i {pos_verb} it", "yes this {thing} is {pos_adj}",
        "highly recommend the {place}", "five stars for this {thing}", "{person} looks {pos_feel} here",
        "i {pos_verb} spending {part}s at the {place}", "we are {pos_feel} with how the {event} went",
        "such a {pos_adj} surprise on {day}", "the {food} tastes {pos_adj}", "{pos_adj} {food} at the {place}",
        "i {pos_verb} the {food} here", "best {food} in town", "{person} was so {pos_feel} today",
        "loving the {thing}", "a {pos_adj} end to the {event}", "{pos_adj} and {pos_adj2} {event}",
    ),
    "negative": (
        "i {neg_verb} this {thing}", "what a {neg_adj} {part} at the {place}", "the {thing} was {neg_adj}",
        "{neg_adj} {thing} today", "worst {event} ever", "so {neg_feel} right now",
        "feeling {neg_feel} at the {place}", "this is {neg_adj}", "i {neg_verb} the {place} on {day}",
        "{person} made this {thing} and it is {neg_adj}", "such a {neg_adj} view from the {place}",
        "we had a {neg_adj} {event}", "{neg_adj} {event} with {person}", "really {neg_feel} about this {thing}",
        "the {place} was {neg_adj} this {part}", "i {neg_verb} how this {thing} turned out",
        "could not be more {neg_feel}", "never going back to the {place}", "this ruined my {part}",
        "{neg_adj} {part} at the {place}", "absolutely {neg_adj}", "what a {neg_adj} {thing}",
        "i am so {neg_feel} with this {thing}", "the worst {event} at the {place}",
        "we hated every minute at the {place}", "my new {thing} is {neg_adj}", "{day} was {neg_adj}",
        "so {neg_feel} to be stuck at the {place} on {day}", "everything about this {thing} is {neg_adj}",
        "a {neg_adj} {thing} from {person}", "i {neg_verb} it", "ugh this {thing} is {neg_adj}",
        "avoid the {place}", "one star for this {thing}", "{person} looks {neg_feel} here",
        "i {neg_verb} spending {part}s at the {place}", "we are {neg_feel} with how the {event} went",
        "such a {neg_adj} surprise on {day}", "the {food} tastes {neg_adj}", "{neg_adj} {food} at the {place}",
        "i {neg_verb} the {food} here", "worst {food} in town", "{person} was so {neg_feel} today",
        "what a waste of a {part}", "a {neg_adj} end to the {event}", "{neg_adj} and {neg_adj2} {event}",
    ),
    "neutral": (
        "posted at {clock} from the {place}", "here is the picture from {day}", "the {place} on {day}",
        "{person} at the {place}", "photo taken at {clock}", "this is the {thing}", "a {thing} on the table",
        "we went to the {place} on {day}", "waiting at the {place}", "{food} for lunch",
        "{number} people at the {place}", "the {place} opens at {clock}", "taken on {day} {part}",
        "bought a {thing} at the {place}", "heading to the {place} at {clock}", "back from the {place}",
        "the {event} starts at {clock}", "{person} took this at the {place}", "another {thing} photo",
        "on the way to the {place}", "{day} {part} at the {place}", "the {thing} next to the {thing2}",
        "{food} and {food2} on {day}", "the {event} is on {day}", "{person} sent me this {thing}",
        "a {thing} from the {place}", "we walked to the {place}", "the {place} is near the {place2}",
        "the bus to the {place} leaves at {clock}", "my {thing} and a {thing2}", "{number} minutes from the {place}",
        "a picture of the {place}", "{person} is at the {place} until {clock}", "this {thing} is new",
        "the {event} was on {day}", "i took this on {day}", "{food} at {clock}",
        "the {place} in the {part}", "here is my {thing}", "we met at the {place} on {day}",
        "the {thing} is in the {place}", "{number} {food} orders at the {place}",
        "one more {thing} from {day}", "my {part} at the {place}", "the {place} at {clock}",
    ),
}  # fmt: skip

SLOT = re.compile(r"\{([a-z_]+?)\d?\}")


@dataclass
class SentimentExample:
    """One image and text with their combined sentiment `label` and each modality's own sentiment."""

    image: Image.Image
    text: str
    label: str
    subset: str
    image_sentiment: str
    text_sentiment: str


def combined_label(image_sentiment: str, text_sentiment: str) -> str:
    """The label of an image + text pair (rule in the module docstring; conflict -> neutral)."""
    if image_sentiment == text_sentiment:
        return image_sentiment
    if image_sentiment == "neutral":
        return text_sentiment
    if text_sentiment == "neutral":
        return image_sentiment
    return "neutral"


def generate_sentence(rng: random.Random, polarity: str) -> str:
    """A random sentence of `polarity` ("positive", "negative" or "neutral")."""
    template = rng.choice(TEMPLATES[polarity])
    return SLOT.sub(lambda match: rng.choice(SLOT_WORDS[match.group(1)]), template)


def generate_sentiment_image(rng: random.Random, polarity: str, image_size: int = 64) -> Image.Image:
    """A face whose mouth shows `polarity`; a neutral image is a flat face or a shape scene, half each."""
    if polarity == "neutral" and rng.random() < 0.5:
        return generate_scene(rng, image_size)[0]
    return draw_face(rng, MOUTH_FOR[polarity], image_size)


def subset_sentiments(subset: str, polarity: str) -> tuple[str, str]:
    """(image sentiment, text sentiment) for a `subset` example whose sentiment side is `polarity`."""
    if subset == "image_decides":
        return polarity, "neutral"
    if subset == "text_decides":
        return "neutral", polarity
    if subset == "agree":
        return polarity, polarity
    if subset == "neutral":
        return "neutral", "neutral"
    if subset == "conflict":
        return polarity, OPPOSITE[polarity]
    raise ValueError(f"unknown subset {subset!r}; expected one of {tuple(SUBSET_SHARES)}")


def subset_counts(n: int) -> dict[str, int]:
    """How many of `n` examples each subset gets: SUBSET_SHARES, rounded by largest remainder."""
    exact = {subset: share * n for subset, share in SUBSET_SHARES.items()}
    counts = {subset: int(value) for subset, value in exact.items()}
    by_remainder = sorted(exact, key=lambda subset: exact[subset] - counts[subset], reverse=True)
    for subset in by_remainder[: n - sum(counts.values())]:
        counts[subset] += 1
    return counts


def sentiment_dataset(n: int, seed: int, image_size: int = 64) -> list[SentimentExample]:
    """`n` examples in SUBSET_SHARES proportions, positive and negative alternating within each subset."""
    rng = random.Random(seed)
    plan = [
        (subset, ("positive", "negative")[index % 2])
        for subset, count in subset_counts(n).items()
        for index in range(count)
    ]
    rng.shuffle(plan)
    examples = []
    for subset, polarity in plan:
        image_sentiment, text_sentiment = subset_sentiments(subset, polarity)
        image = generate_sentiment_image(rng, image_sentiment, image_size)
        text = generate_sentence(rng, text_sentiment)
        label = combined_label(image_sentiment, text_sentiment)
        examples.append(SentimentExample(image, text, label, subset, image_sentiment, text_sentiment))
    return examples


def sentiment_vocabulary() -> list[str]:
    """Every word any generated sentence can contain, sorted (for a word-level tokenizer)."""
    words: set[str] = set()
    for templates in TEMPLATES.values():
        for template in templates:
            for token in template.split():
                match = SLOT.search(token)
                if match is None:
                    words.add(token)
                    continue
                for filler in SLOT_WORDS[match.group(1)]:
                    words.update(token.replace(match.group(0), filler).split())
    return sorted(words)
