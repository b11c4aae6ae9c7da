"""Emotion hints: the classifier against labelled NPC lines, and sentences from streamed text."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npcd.audio import Float32Array
from npcd.lipsync.emotion import (
    BUILTIN_EMOTIONS,
    EmotionClassifier,
    EmotionSpec,
    SentenceSplitter,
    emotion_specs,
)
from npcd.localbackend.engines.intents import MiniLmEmbedder
from npcd.personas import load_persona
from npcd.personas.model import BUILTIN_EMOTION_NAMES, Emotion
from tests.conftest import SAMPLES

#: NPC lines written for these tests, none a copy of a built-in example. Measured: 77 of 85
#: (91%) get their label. The first 56 were at hand while the examples were chosen (50 right);
#: the last 29 were written afterwards, as a check (27 right). The misses are near ties,
#: mostly a topic pulling the wrong way (food towards disgust, "dark" towards surprise).
LABELLED: list[tuple[str, str]] = [
    ("neutral", "Iron swords are forty gold apiece."),
    ("neutral", "The herbalist lives by the east well."),
    ("neutral", "I'll have it done by morning."),
    ("neutral", "The gate closes at dusk."),
    ("neutral", "You'll want the room at the end of the hall."),
    ("neutral", "Hunting knives are twelve gold."),
    ("neutral", "Follow the river until you reach the bridge."),
    ("neutral", "That's chamomile, good for sleep."),
    ("happy", "Oh, splendid, you found my ring!"),
    ("happy", "Ha! That's the spirit, friend!"),
    ("happy", "I haven't laughed like that in years."),
    ("happy", "Welcome home! We've missed you so."),
    ("happy", "What a joy to see the town so lively."),
    ("happy", "You've brightened my whole day."),
    ("happy", "Marvellous! I knew you could do it!"),
    ("happy", "I'm thrilled, truly thrilled."),
    ("sad", "My wife passed last winter."),
    ("sad", "I used to have a son about your age."),
    ("sad", "The old inn burned down, and with it all my memories."),
    ("sad", "I'm alone now. Have been for years."),
    ("sad", "Nothing I do seems to matter anymore."),
    ("sad", "It still hurts to think of her."),
    ("sad", "We lost so many good men that night."),
    ("sad", "I never got to say goodbye."),
    ("angry", "Get your hands off my daughter!"),
    ("angry", "You dare come back here after what you did?"),
    ("angry", "I'll gut you like a fish, you snake!"),
    ("angry", "Enough! Out, before I throw you out!"),
    ("angry", "Liar! You stole from me!"),
    ("angry", "Cross me again and you'll regret it."),
    ("angry", "I'm furious with that lazy apprentice."),
    ("angry", "Don't you ever call me that again!"),
    ("afraid", "Oh gods, is it following us?"),
    ("afraid", "Please, I have a family, spare me!"),
    ("afraid", "I heard howling by the north road last night and I couldn't breathe."),
    ("afraid", "Lock the doors! Quickly!"),
    ("afraid", "I'm terrified they'll find out I talked to you."),
    ("afraid", "Don't leave me here alone, please."),
    ("afraid", "Something is moving in the dark."),
    ("afraid", "If the smugglers see me with you, I'm dead."),
    ("surprised", "You killed the wolf by yourself?"),
    ("surprised", "Well, would you look at that!"),
    ("surprised", "Wait, you know my brother?"),
    ("surprised", "What? Since when?"),
    ("surprised", "Oh my, I wasn't expecting visitors!"),
    ("surprised", "Truly? The captain himself?"),
    ("surprised", "That can't be! It's been years!"),
    ("surprised", "Goodness me, is that a dragon scale?"),
    ("disgusted", "Ugh, you reek of the sewers."),
    ("disgusted", "That stew looks like something a dog left behind."),
    ("disgusted", "Gross. There's a hair in my ale."),
    ("disgusted", "Smugglers and cheats, they make me sick."),
    ("disgusted", "Get that rotten thing off my table."),
    ("disgusted", "That's the vilest thing I've ever tasted."),
    ("disgusted", "He spat on the floor, the pig."),
    ("disgusted", "Eugh, slime all over my boots."),
    # Written after the examples were chosen.
    ("neutral", "The captain's office is up the tower stairs."),
    ("neutral", "A steel shield costs fifty-five gold."),
    ("neutral", "Breakfast is porridge and bread."),
    ("neutral", "The north road leads to the mountain pass."),
    ("neutral", "Leave your horse at the stable behind the inn."),
    ("happy", "Oh, you remembered my birthday!"),
    ("happy", "Ha, now that's a story worth a free ale!"),
    ("happy", "I couldn't be happier for you both."),
    ("happy", "Excellent! The new blade is perfect."),
    ("sad", "The house feels empty without the children."),
    ("sad", "He was my oldest friend, and now he's gone."),
    ("sad", "I don't sing anymore. Not since the fire."),
    ("sad", "I'm sorry, I just need a moment."),
    ("angry", "Put that down, you thieving rat!"),
    ("angry", "One more word and I'll knock your teeth out."),
    ("angry", "Who do you think you are, barging in here?"),
    ("angry", "I told you never to come back!"),
    ("afraid", "There's someone outside the window!"),
    ("afraid", "Please don't tell them I'm here."),
    ("afraid", "The wolves, they're inside the walls!"),
    ("afraid", "I can't go back there, I just can't."),
    ("surprised", "Wait, you're the one who saved the miller?"),
    ("surprised", "Oh! That's not what I expected at all."),
    ("surprised", "You found it? After all this time?"),
    ("surprised", "What on earth is that?"),
    ("disgusted", "Ugh, the floor is sticky with spilled ale."),
    ("disgusted", "That man is a greasy, lying toad."),
    ("disgusted", "Rats in the flour sacks, disgusting."),
    ("disgusted", "That smell is making me gag."),
]

#: Plain informational lines, the bulk of what an NPC says: they must leave the face at rest.
PLAIN = [
    "The forge opens at dawn.",
    "Repairs cost five gold and are done by the next morning.",
    "The Sleeping Stag is across the square from the chapel.",
    "Captain Hale signs the writs himself.",
    "A room is eight silver a night.",
    "Take the bridge over the Ash River and keep left.",
]


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    engine = MiniLmEmbedder()
    engine.load()
    return engine


@pytest.fixture(scope="module")
def classifier(embedder: MiniLmEmbedder) -> EmotionClassifier:
    return EmotionClassifier(embedder, emotion_specs())


def test_builtins_are_the_ones_the_persona_model_accepts() -> None:
    assert tuple(BUILTIN_EMOTIONS) == BUILTIN_EMOTION_NAMES
    for name, examples in BUILTIN_EMOTIONS.items():
        assert 10 <= len(examples) <= 25, name
        assert len(set(examples)) == len(examples), name


def test_labelled_lines_are_not_copies_of_the_examples() -> None:
    examples = {text.lower() for texts in BUILTIN_EMOTIONS.values() for text in texts}
    assert not [text for _, text in LABELLED if text.lower() in examples]
    assert not [text for text in PLAIN if text.lower() in examples]
    counts = Counter(label for label, _ in LABELLED)
    assert set(counts) == set(BUILTIN_EMOTIONS) and min(counts.values()) >= 5


def test_accuracy_on_labelled_lines(classifier: EmotionClassifier) -> None:
    right: Counter[str] = Counter()
    for label, text in LABELLED:
        right[label] += classifier.classify(text).name == label
    assert sum(right.values()) >= 0.85 * len(LABELLED), right  # measured 77/85
    totals = Counter(label for label, _ in LABELLED)
    weak = {name: f"{right[name]}/{total}" for name, total in totals.items()}
    assert all(right[name] >= 2 / 3 * total for name, total in totals.items()), weak


@pytest.mark.parametrize("text", PLAIN)
def test_plain_lines_are_calm_neutral(classifier: EmotionClassifier, text: str) -> None:
    guess = classifier.classify(text)
    assert guess.name == "neutral" and guess.intensity < 0.4, guess


@pytest.mark.parametrize(
    ("strong", "mild"),
    [
        (
            "You lying snake! Get out before I break every bone in your body!",
            "Hm. That's a little irritating, but never mind.",
        ),
        ("This is the happiest day of my life!", "That's nice."),
        (
            "I've lost everything. My wife, my sons, all of it.",
            "A shame the market was small today.",
        ),
    ],
)
def test_intensity_follows_the_strength_of_feeling(
    classifier: EmotionClassifier, strong: str, mild: str
) -> None:
    loud, quiet = classifier.classify(strong), classifier.classify(mild)
    assert loud.name != "neutral" and loud.intensity > 0.8, loud
    assert loud.intensity > quiet.intensity + 0.3, (loud, quiet)


def test_intensity_is_in_range_and_blank_text_is_calm(classifier: EmotionClassifier) -> None:
    for _, text in LABELLED:
        assert 0.0 <= classifier.classify(text).intensity <= 1.0
    blank = classifier.classify("  ")
    assert (blank.name, blank.intensity) == ("neutral", 0.0)


def test_custom_emotion_comes_from_the_persona_examples(embedder: MiniLmEmbedder) -> None:
    guard = load_persona(SAMPLES / "gate_guard.yaml").persona
    classifier = EmotionClassifier(embedder, emotion_specs(guard.emotions))
    assert classifier.names == ("neutral", "angry", "afraid", "suspicious")
    for text in (
        "I don't buy that story for a second.",
        "What's really in the cart, traveller?",
        "Hm. And who exactly told you to come here?",
    ):
        assert classifier.classify(text).name == "suspicious", text
    # Undeclared built-ins never come out, however well they would fit.
    assert {classifier.classify(text).name for _, text in LABELLED} <= set(classifier.names)
    assert classifier.classify("The gate closes at dusk.").name == "neutral"
    assert classifier.classify("Weapon down, or I'll cut you down where you stand!").name == (
        "angry"
    )


def test_specs_from_a_declaration() -> None:
    assert [spec.name for spec in emotion_specs()] == list(BUILTIN_EMOTION_NAMES)
    specs = emotion_specs(
        [
            Emotion(name="angry", examples=["By my father's hammer!"]),
            Emotion(name="proud", examples=["Finest steel in the valley."]),
        ]
    )
    # neutral comes first even when not declared; a built-in keeps its examples and adds more.
    assert [spec.name for spec in specs] == ["neutral", "angry", "proud"]
    assert specs[0].examples == BUILTIN_EMOTIONS["neutral"]
    assert specs[1].examples == (*BUILTIN_EMOTIONS["angry"], "By my father's hammer!")
    assert specs[2] == EmotionSpec("proud", ("Finest steel in the valley.",))
    with pytest.raises(ValueError, match="declared twice"):
        emotion_specs([Emotion(name="sad"), Emotion(name="sad")])


def test_classifier_refuses_specs_it_cannot_use(embedder: MiniLmEmbedder) -> None:
    angry = EmotionSpec("angry", BUILTIN_EMOTIONS["angry"])
    neutral = EmotionSpec("neutral", BUILTIN_EMOTIONS["neutral"])
    with pytest.raises(ValueError, match="neutral"):
        EmotionClassifier(embedder, [angry])
    with pytest.raises(ValueError, match="repeat"):
        EmotionClassifier(embedder, [neutral, angry, angry])
    with pytest.raises(ValueError, match="example"):
        EmotionClassifier(embedder, [neutral, EmotionSpec("blank", ())])


class CountingEmbedder:
    """Deterministic fake vectors, counting every text embedded."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> Float32Array:
        self.embedded.extend(texts)
        rows = [np.random.default_rng(zlib.crc32(text.encode())).normal(size=384) for text in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 384)
        normed: Float32Array = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return normed


def test_examples_are_embedded_once_per_embedder() -> None:
    embedder = CountingEmbedder()
    builtins = emotion_specs()
    EmotionClassifier(embedder, builtins)
    first = len(embedder.embedded)
    assert first == sum(len(examples) for examples in BUILTIN_EMOTIONS.values())
    EmotionClassifier(embedder, builtins)
    assert len(embedder.embedded) == first, "a second conversation reuses the vectors"
    custom = EmotionSpec("suspicious", ("Who sent you?", "I've got my eye on you."))
    classifier = EmotionClassifier(embedder, (*builtins, custom))
    assert embedder.embedded[first:] == list(custom.examples), "only the new emotion is embedded"
    classifier.classify("Who sent you?")
    assert len(embedder.embedded) == first + 3, "classifying embeds just the line"
    other = CountingEmbedder()
    EmotionClassifier(other, builtins)
    assert len(other.embedded) == first, "vectors belong to their embedder"


# -- sentence splitting ----------------------------------------------------------------------


def split(deltas: Sequence[str], max_chars: int = 400) -> list[str]:
    splitter = SentenceSplitter(max_chars)
    out = [sentence for delta in deltas for sentence in splitter.feed(delta)]
    rest = splitter.flush()
    return out + ([rest] if rest is not None else [])


def test_sentence_completes_when_the_next_one_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The for") == []
    assert splitter.feed("ge opens at da") == []
    assert splitter.feed("wn.") == [], "the next word may still turn '.' into '.5' or 'Mr.'"
    assert splitter.feed(" ") == []
    assert splitter.feed("Come back then! Or") == ["The forge opens at dawn.", "Come back then!"]
    assert splitter.feed(" don't.") == []
    assert splitter.flush() == "Or don't."
    assert splitter.flush() is None, "flush empties the splitter"


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        (
            "Mr. Hale sent me. Ask Dr. Aldric at St. Bran's.",
            ["Mr. Hale sent me.", "Ask Dr. Aldric at St. Bran's."],
        ),
        (
            "Captain J. R. Hale signs writs. Nobody else.",
            ["Captain J. R. Hale signs writs.", "Nobody else."],
        ),
        ("Herbs, e.g. sage and thyme. Fresh.", ["Herbs, e.g. sage and thyme.", "Fresh."]),
        ("It costs 3.5 gold. Cheap!", ["It costs 3.5 gold.", "Cheap!"]),
        ("I... I can't. Not now.", ["I... I can't.", "Not now."]),
        ("Well… maybe. Wait...? You're back?", ["Well… maybe.", "Wait...?", "You're back?"]),
        ("What?! No! Truly?", ["What?!", "No!", "Truly?"]),
        ('He yelled "Run!" Then he fell.', ['He yelled "Run!"', "Then he fell."]),
        ('Stop. "Who goes there?" she said.', ["Stop.", '"Who goes there?" she said.']),
        ("First line\nSecond line.", ["First line", "Second line."]),
        ("   ", []),
    ],
)
def test_sentence_boundaries(text: str, sentences: list[str]) -> None:
    assert split([text]) == sentences


def test_runaway_text_is_cut_at_a_space() -> None:
    words = ["word"] * 60
    out = split([" ".join(words)], max_chars=50)
    assert len(out) > 1 and all(len(sentence) <= 50 for sentence in out)
    assert " ".join(out).split() == words


@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_how_text_is_chunked_does_not_change_the_sentences(cuts: list[int]) -> None:
    text = (
        "Well met, friend. Mr. Hale said you'd come... Did he? Aye! "
        "Three swords, 2.5 gold each.\nOne more thing: mind the wolves. Farewell"
    )
    points = sorted({min(cut, len(text)) for cut in cuts})
    deltas = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert split(deltas) == split([text])
