"""Which of a persona's emotions fits a line the NPC says, for a game's facial animation.

Backends say nothing about emotion, and a second model call per sentence would cost more than
the speech it annotates, so npcd guesses from the NPC's own words with the MiniLM sentence
embedder it already ships (`npcd.localbackend.engines.intents.MiniLmEmbedder`; one embedding,
2-10 ms depending on the CPU, per sentence). Each emotion is known by example lines, and a
sentence takes the emotion whose closest examples it most resembles. MiniLM embeds topic as
much as tone, so each built-in has ~20 examples of varied topic and scores the mean of its 3
best matches, which one lucky topical match cannot carry. Accuracy: see the labelled lines in
tests/unit/test_emotion.py.

Intensity is arousal: how far the strongest non-neutral emotion beats neutral, squashed into
[0, 1]. It is on one scale whatever the winner, so a calm informational line comes out neutral
and low, a near miss neutral and moderate, and an outburst high.

Sans-I/O and synchronous: the caller feeds transcript deltas to `SentenceSplitter` and runs
`EmotionClassifier.classify` in a worker thread per completed sentence.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from npcd.audio import Float32Array
from npcd.personas.model import Emotion

__all__ = [
    "BUILTIN_EMOTIONS",
    "NEUTRAL",
    "EmotionClassifier",
    "EmotionGuess",
    "EmotionSpec",
    "SentenceSplitter",
    "emotion_specs",
]

NEUTRAL: Final = "neutral"

#: Example lines for each built-in emotion: short, spoken, in the register of the sample
#: characters, and varied in topic so that the topic of a line does not decide its emotion.
BUILTIN_EMOTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "neutral": (
        "That will be ten silver.",
        "The road north runs past the old mill.",
        "Rooms are upstairs, second door on the left.",
        "I sell swords, knives and shields.",
        "The captain keeps the records in the tower.",
        "Take the left path at the river.",
        "We close when the bell rings.",
        "It takes a day to mend a blade like this.",
        "Yes, I have some of that in stock.",
        "The market is held every third day.",
        "I'll need your name for the book.",
        "Come back tomorrow and it will be ready.",
        "Two drops of this in tea will ease a fever.",
        "We have bread, cheese and a little smoked fish.",
        "Supper is served after the evening bell.",
        "The ale is two copper a mug.",
        "Leave it on the bench by the door.",
        "Papers, please.",
        "I see.",
        "Hmm, let me think.",
        "Very well.",
        "Good day to you. Can I help you?",
    ),
    "happy": (
        "Ha! Wonderful news, friend!",
        "Oh, I'm so glad you came back!",
        "That's the best thing I've heard all week.",
        "You've made an old man very happy.",
        "Splendid! Drinks are on the house tonight!",
        "What a lovely surprise, welcome, welcome!",
        "I could dance, I truly could.",
        "Ha ha, you've a fine sense of humour.",
        "Thank you, thank you, this means the world to me.",
        "Finally, some good fortune for this town!",
        "I'm delighted to help, truly.",
        "My heart is full today.",
        "Brilliant work, I'm proud of you.",
        "What a beautiful morning!",
        "Perfect, just perfect!",
        "Oh, how lovely!",
        "You're a true friend, you know that?",
        "Now that's cause for celebration!",
        "Best day of trade I've had all year!",
    ),
    "sad": (
        "I miss him every single day.",
        "She never came home from the war.",
        "It's all gone now. Everything we built.",
        "Forgive me, I... I can't talk about it.",
        "Nobody remembers the old songs anymore.",
        "I buried my brother by that river.",
        "Some wounds never heal, friend.",
        "I'm so tired of losing people.",
        "There's nothing left for me here.",
        "I wish I could have saved them.",
        "It breaks my heart to see the town like this.",
        "We used to laugh here, once.",
        "I'm sorry. I'm so very sorry.",
        "I cried for days when the letter came.",
        "The house is so quiet now.",
        "I keep her cloak by the fire, still.",
        "All those years, wasted.",
        "He would have been twenty this spring.",
        "I'm not the man I was, friend.",
    ),
    "angry": (
        "Get out of my shop!",
        "How dare you speak to me like that!",
        "Touch that again and you'll lose the hand.",
        "I've had enough of your lies!",
        "You filthy thief, I'll have the guards on you!",
        "Don't you dare threaten me in my own house.",
        "Shut your mouth and listen to me.",
        "That's an insult and you know it.",
        "I'm sick of your excuses.",
        "Say that again. I dare you.",
        "You'll pay for what you did.",
        "Stop wasting my time, fool!",
        "Curse you and your whole family!",
        "I swear I'll break your nose.",
        "You worthless snake, get out of my sight!",
        "I'm furious, and you'd better have a good reason.",
        "Who let you in here?",
        "I warned you. I warned you twice!",
        "Don't you walk away from me!",
        "Hand it back, now!",
    ),
    "afraid": (
        "Please, don't hurt me!",
        "Did you hear that? Something's out there.",
        "I'm scared. Truly, I'm scared.",
        "Run! They're coming!",
        "Gods help us, they're over the wall!",
        "I daren't say his name aloud.",
        "Keep your voice down, they might be listening.",
        "What if they come back for me?",
        "My hands won't stop shaking.",
        "I beg you, let me go.",
        "We're going to die out here.",
        "Something's wrong. I don't like this at all.",
        "Hide, quickly, before they see us!",
        "I can't stop looking over my shoulder.",
        "There's something behind you!",
        "I think we're being watched.",
        "Don't make me go down there, please.",
        "Oh gods, oh gods, not again.",
        "If he finds me, I'm finished.",
    ),
    "surprised": (
        "What? You're back already?",
        "Well, I never! Is that really you?",
        "By the gods, where did you find that?",
        "No! You can't be serious.",
        "Wait, the captain said that?",
        "Really? I had no idea.",
        "Goodness, you gave me a start!",
        "Ten dragons? Truly?",
        "I don't believe it!",
        "Well, that's unexpected.",
        "Whoa, look at the size of that!",
        "You did what?",
        "Oh! I didn't see you there.",
        "Impossible. That sword was lost years ago.",
        "I can hardly believe my eyes!",
        "You? Of all people?",
        "What in the world is that?",
        "Huh! Never seen one like that before.",
        "You're the one everyone is talking about?",
        "Back from the dead, are you?",
    ),
    "disgusted": (
        "Ugh, what is that smell?",
        "That's revolting. Take it away.",
        "Don't bring that filth in here.",
        "Rotten through, the lot of it. Disgusting.",
        "I wouldn't touch that with a ten-foot pole.",
        "You eat that? Gods, that's vile.",
        "The sewer stinks worse than a dead rat.",
        "Disgusting. Wipe your boots before you come in.",
        "Don't come near me smelling like that.",
        "That makes my stomach turn.",
        "Foul. Absolutely foul.",
        "Bribes and lies, it sickens me.",
        "Maggots. Everywhere. Ugh.",
        "Keep your greasy hands off my counter.",
        "Ugh, it's crawling with flies.",
        "Don't make me touch that.",
        "The stench of that tannery, gods.",
        "Spitting on my floor? Vile habit.",
    ),
}

#: An emotion scores the mean of its best this-many example similarities (fewer if it has fewer).
_TOP_K: Final = 3
#: Intensity = logistic((margin - midpoint) / scale), margin = best non-neutral score minus
#: neutral's. On the test's labelled and plain lines, neutral ones get intensities of 0.03-0.42
#: (median 0.15), emotional ones 0.25-0.99 (median 0.81, 90% above 0.59).
_MARGIN_MIDPOINT: Final = 0.05
_MARGIN_SCALE: Final = 0.08


@dataclass(frozen=True, slots=True)
class EmotionSpec:
    """One emotion the classifier may pick, with the lines it is known by."""

    name: str
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EmotionGuess:
    """The emotion a line shows and how strongly (0 = calm, 1 = as strong as it gets)."""

    name: str
    intensity: float


class Embedder(Protocol):
    """What the classifier needs of `MiniLmEmbedder`: unit-length sentence vectors."""

    def embed(self, texts: Sequence[str]) -> Float32Array: ...


def emotion_specs(declared: Iterable[Emotion] | None = None) -> tuple[EmotionSpec, ...]:
    """A persona's `emotions` as classifier specs; ``None`` means every built-in.

    Built-in names get the built-in examples plus any the persona adds, and `neutral` is added
    first when not declared, because a game always needs a resting face to return to.
    """
    if declared is None:
        return tuple(EmotionSpec(name, examples) for name, examples in BUILTIN_EMOTIONS.items())
    specs: list[EmotionSpec] = []
    for emotion in declared:
        examples = tuple(
            dict.fromkeys((*BUILTIN_EMOTIONS.get(emotion.name, ()), *emotion.examples))
        )
        if not examples:
            raise ValueError(f"custom emotion {emotion.name!r} has no examples")
        if any(spec.name == emotion.name for spec in specs):
            raise ValueError(f"emotion {emotion.name!r} is declared twice")
        specs.append(EmotionSpec(emotion.name, examples))
    if not any(spec.name == NEUTRAL for spec in specs):
        specs.insert(0, EmotionSpec(NEUTRAL, BUILTIN_EMOTIONS[NEUTRAL]))
    return tuple(specs)


# Example embeddings per embedder and spec: built once, shared by every persona and
# conversation using that emotion (most use the built-ins), and dropped with the embedder.
_prototypes: weakref.WeakKeyDictionary[Embedder, dict[EmotionSpec, Float32Array]] = (
    weakref.WeakKeyDictionary()
)
_prototypes_lock = threading.Lock()


def _embedded(embedder: Embedder, specs: Sequence[EmotionSpec]) -> list[Float32Array]:
    with _prototypes_lock:
        cache = _prototypes.setdefault(embedder, {})
        missing = [spec for spec in dict.fromkeys(specs) if spec not in cache]
    if missing:
        # Embedded outside the lock (the built-ins take about a second on a small CPU, once);
        # a racing thread may embed the same spec too, and the first result stored wins.
        vectors = embedder.embed([text for spec in missing for text in spec.examples])
        offset = 0
        with _prototypes_lock:
            for spec in missing:
                end = offset + len(spec.examples)
                cache.setdefault(spec, vectors[offset:end])
                offset = end
    with _prototypes_lock:
        return [cache[spec] for spec in specs]


class EmotionClassifier:
    """Picks one of ``specs`` for a line. Immutable and safe to share between threads; building
    one embeds only examples no earlier classifier on the same embedder has, so after the first
    (warm it at start-up) one per conversation costs next to nothing."""

    def __init__(self, embedder: Embedder, specs: Sequence[EmotionSpec]) -> None:
        names = [spec.name for spec in specs]
        if NEUTRAL not in names:
            raise ValueError("the emotions need `neutral`, the resting face (see emotion_specs)")
        if len(set(names)) != len(names):
            raise ValueError(f"emotion names repeat: {', '.join(names)}")
        if any(not spec.examples for spec in specs):
            raise ValueError("every emotion needs at least one example")
        self._embedder = embedder
        self.names: tuple[str, ...] = tuple(names)
        prototypes = _embedded(embedder, specs)
        self._vectors = np.concatenate(prototypes)
        ends = np.cumsum([len(p) for p in prototypes])
        self._spans = list(zip((0, *ends[:-1].tolist()), ends.tolist(), strict=True))
        self._neutral = names.index(NEUTRAL)

    def classify(self, text: str) -> EmotionGuess:
        """The emotion ``text`` shows (one sentence is best); blank text is calm neutral."""
        if not text.strip():
            return EmotionGuess(NEUTRAL, 0.0)
        scores = self.scores(text)
        if len(scores) == 1:
            return EmotionGuess(NEUTRAL, 0.0)
        best = int(np.argmax(scores))
        margin = float(np.max(np.delete(scores, self._neutral)) - scores[self._neutral])
        intensity = 1.0 / (1.0 + math.exp(-(margin - _MARGIN_MIDPOINT) / _MARGIN_SCALE))
        return EmotionGuess(self.names[best], intensity)

    def scores(self, text: str) -> Float32Array:
        """Each emotion's score for ``text`` (mean of its best example cosines), by `names`."""
        similarities = self._vectors @ self._embedder.embed([text])[0]
        out = np.empty(len(self._spans), dtype=np.float32)
        for index, (start, end) in enumerate(self._spans):
            span = similarities[start:end]
            k = min(_TOP_K, len(span))
            out[index] = np.partition(span, len(span) - k)[-k:].mean()
        return out


# -- sentences from streamed text -----------------------------------------------------------

# A run of sentence-ending marks (with closing quotes or brackets) and the space after it, seen
# only once the next word has begun; or a line break.
_CANDIDATE: Final = re.compile(r"([.!?…]+)[\"'”’)\]]*\s+(?=\S)|\n\s*")
_ELLIPSIS: Final = re.compile(r"(?:\.{2,}|…)+")
#: Words whose "." does not end a sentence ("Mr. Smith", "St. Aldric").
_ABBREVIATIONS: Final = frozenset(
    "mr mrs ms dr st mt sr jr prof capt cpt sgt lt col gen rev fr vs".split()
)


class SentenceSplitter:
    """Completed sentences out of a stream of text deltas, so each can be classified as soon as
    it is whole.

    A mark ends a sentence only once the next word starts and is not lowercase ("e.g. this",
    "Well... maybe" stay whole); a single "." after a known abbreviation or an initial does
    not; an ellipsis alone is a pause, not an end; a line break always ends one. Text that runs
    past ``max_chars`` without an end is cut at a space, so a rambling line still gets a face.
    """

    def __init__(self, max_chars: int = 400) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self._max_chars = max_chars
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add ``delta``; return the sentences it completed, stripped, in order."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _CANDIDATE.finditer(self._buffer):
            marks = match.group(1)
            if marks is not None and not self._ends_sentence(marks, start, match):
                continue
            sentence = self._buffer[start : match.end()].strip()
            if sentence:
                out.append(sentence)
            start = match.end()
        rest = self._buffer[start:]
        while len(rest) > self._max_chars:
            cut = rest.rfind(" ", 1, self._max_chars + 1)
            cut = cut if cut > 0 else self._max_chars
            if head := rest[:cut].strip():
                out.append(head)
            rest = rest[cut:].lstrip()
        self._buffer = rest
        return out

    def flush(self) -> str | None:
        """The unfinished rest (at the end of a response), or ``None`` if there is none."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    def _ends_sentence(self, marks: str, start: int, match: re.Match[str]) -> bool:
        if _ELLIPSIS.fullmatch(marks) or self._buffer[match.end()].islower():
            return False
        if marks == ".":
            words = self._buffer[start : match.start()].split()
            last = words[-1].lstrip("\"'‘“([") if words else ""
            if last.lower() in _ABBREVIATIONS or (len(last) == 1 and last.isupper()):
                return False
        return True
