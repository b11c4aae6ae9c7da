"""Train the acoustic viseme model shipped as npcd/lipsync/data/acoustic.npz.

Run with ``python bench/lipsync_train.py``: 134 s here on one core (one BLAS thread), 54 KB out.
It renders 480 NPC lines (110 written out, the rest generated from parts) with eSpeak, each
five times in turn through the ten voices and 16 other eSpeak variants (other formant sets,
the Klatt synthesiser, breathy and creaky sources: variety, so the model learns mouth shapes
rather than ten voices) at speeds 0.8-1.3; augments every render (vocal-tract length by
resampling, spectral tilt, white or pink noise, gain down to -40 dB); labels each 10 ms analysis
frame with the dominant viseme of the render's exact `PhonemeTrack`; and fits a
one-hidden-layer MLP (192 ReLU units, dropout 0.2) with Adam: about 920 000 frames, 12 epochs,
88% frame accuracy on the 40 validation sentences. The held-out
`npcd.bench.lipsync.EVAL_SENTENCES` are never trained on (checked here), nor the unseen
variants ``bench/lipsync.py`` scores.

Seeds are fixed, but eSpeak varies its output slightly from call to call, so two runs give
slightly different weights (and scores within a few tenths of a point).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from npcd.bench.lipsync import (  # noqa: E402
    EVAL_SENTENCES,
    TRAIN_VARIANTS,
    UNSEEN_VOICES,
    exact_frames,
    render,
)
from npcd.lipsync.acoustic import (  # noqa: E402
    HOP_MS,
    N_CEPS,
    N_FEATURES,
    OFFSETS,
    RATE,
    SPEECH_DB,
    FeatureStream,
    stack_context,
)
from npcd.lipsync.visemes import OVR_VISEMES  # noqa: E402
from npcd.localbackend.engines.tts import VOICE_MAP  # noqa: E402

OUT = REPO / "npcd" / "lipsync" / "data" / "acoustic.npz"
SEED = 1611
Array = npt.NDArray[np.float64]

# Training text ---------------------------------------------------------------------------------

LINES = (
    "Welcome to the Rusty Anchor, sit anywhere you like.",
    "Iron sword, forty gold, and she's yours.",
    "I haven't seen a stranger in these parts for years.",
    "The wolves came down from the hills last night.",
    "Shh, the baby's finally asleep.",
    "What brings you to Thornwick, traveller?",
    "That'll be five copper for the ale.",
    "The king's men took everything we had.",
    "Go north past the mill, then follow the river.",
    "I used to be an adventurer like you.",
    "Oh, you found my ring! Thank you, thank you!",
    "Move along, citizen. Nothing to see here.",
    "The blacksmith's daughter knows more than she says.",
    "Pay the toll or turn back.",
    "Fish! Fresh fish! Caught this very morning!",
    "Have you heard the rumours about the haunted chapel?",
    "My feet ache from the road, and my purse is empty.",
    "Yes, yes, I know, the potion smells awful. Drink it anyway.",
    "We ride at first light. Sharpen your blade.",
    "Thieves! Guards, stop them!",
    "You'll need a stronger shield if you mean to face the troll.",
    "Ugh, another bard. Please, no more ballads tonight.",
    "Who goes there? Show yourself!",
    "The ship from Vellmoor is three days late.",
    "I can teach you the basics of alchemy, for a fee.",
    "Rumour has it the queen is gravely ill.",
    "Sorry, friend, we're all out of rooms.",
    "Put that down! It's older than the kingdom itself.",
    "Mushrooms, moss and a pinch of sulphur: that's the recipe.",
    "Look out, the roof is caving in!",
    "Each job pays fifty, half up front.",
    "Would you kindly wipe your boots before you come in?",
    "The abbot forbids visitors after vespers.",
    "Why would I trust a sellsword?",
    "Apples, pears, plums, the sweetest in the valley.",
    "Beyond the gate lies the Whispering Wood. Nobody returns.",
    "Hold still while I bandage that arm.",
    "Hah! You call that a punch?",
    "Vengeance is a poor companion on a long road.",
    "Ten thousand years this tower has stood.",
    "Leave the horse with the stable boy, he'll feed her.",
    "I'm looking for my son. Have you seen him?",
    "The prophecy speaks of a hero from the east.",
    "Zounds, what a racket! Can't a man drink in peace?",
    "These boots were made by dwarves, they'll never wear out.",
    "Please, take the child somewhere safe.",
    "Well, well, well. Look who crawled back.",
    "The river freezes solid by midwinter.",
    "Our mayor is a fool, but an honest one.",
    "Keep an eye on the sky, storms come fast here.",
    "Father always said gold buys everything except loyalty.",
    "Show me your papers.",
    "Magic has a price, and you won't like it.",
    "The cheese is cheap today, the wine is not.",
    "I was a soldier once, until the arrow found my knee.",
    "Quick, through the window, before they see us!",
    "Seven bridges, seven trolls, seven tolls.",
    "Your fortune? Let me see your palm.",
    "The ledger says you owe us eighty crowns.",
    "Ahoy! Throw me the rope!",
    "Every night the bells ring, and nobody pulls the ropes.",
    "Should we wait for the others, or go in now?",
    "Vivid dreams again. Fire, and a woman with no face.",
    "I've never tasted anything so foul in all my life.",
    "We buried him beneath the old yew tree.",
    "Judge the wine, not the bottle.",
    "How much for the lute?",
    "Thunder rolls over the peaks like a giant's drum.",
    "You have my thanks, and my sword.",
    "Those runes glow when danger is near.",
    "Fine weather for a hanging, isn't it?",
    "Oi! That's my chicken!",
    "The weaver needs more thread before the festival.",
    "Knowledge is power, and power is dangerous.",
    "Ask the hermit, he knows the mountain paths.",
    "She sells shells by the shore, every summer.",
    "Thirty-three thieves thought they'd thrill the throne.",
    "My shop opens at nine and closes when I'm tired.",
    "Did the courier bring the parcel from Ashford?",
    "Bread, butter, and a bit of bacon, please.",
    "The guild will hear about this, mark my words.",
    "Is it true you slew the dragon of Greymoor?",
    "Eh? Speak up, my hearing isn't what it used to be.",
    "A thousand pardons, my lord, I didn't see you there.",
    "Cover your mouth, the plague is in the lower town.",
    "Which way to the arena?",
    "Our herbs cure coughs, fevers, and broken hearts.",
    "I'd rather die than bow to that tyrant.",
    "Join us, and you'll never go hungry again.",
    "Foolish mortal, you dare enter my domain?",
    "Happy harvest! Have a honey cake.",
    "Your armour's dented. I can hammer it out by noon.",
    "Rope, lantern, rations: don't leave without them.",
    "Uh, I, um, I wasn't stealing, honest.",
    "Papa says the moon is made of cheese.",
    "Nobody leaves the city until the murderer is caught.",
    "The gods are silent, and the priests grow rich.",
    "Watch your step, the floor's rotten.",
    "Loyal to the crown, always.",
    "Yesterday the well ran dry.",
    "Would you fancy a game of dice?",
    "Ooh, shiny! Where'd you get that?",
    "The axe is heavier than it looks.",
    "Cheers! To old friends and new roads.",
    "Don't touch the purple ones, they bite.",
    "The envoy from Zarath arrives tomorrow.",
    "Move, you oaf, you're blocking the road.",
    "Shoes, shirts and shawls, all half price.",
    "It's a long way to Ironhold on foot.",
    "A quest? For me? How exciting!",
)

_OPENERS = (
    "Listen",
    "Friend",
    "Hey",
    "Traveller",
    "Look",
    "By the gods",
    "Well",
    "Honestly",
    "Hush",
    "Oh",
    "My lady",
    "Good sir",
    "Captain",
    "Right",
    "Aye",
    "No",
)
_SUBJECTS = (
    "the old miller",
    "my cousin",
    "the priestess",
    "a merchant from the coast",
    "that goblin",
    "the village elder",
    "our cook",
    "the night watch",
    "a wandering monk",
    "the baron's son",
    "the ferryman",
    "your brother",
    "the witch of the fen",
    "every fisherman here",
    "the young thief",
    "the queen's jester",
)
_VERBS = (
    "swore he saw",
    "is hunting for",
    "once sold",
    "refuses to talk about",
    "buried",
    "keeps dreaming of",
    "wants to buy",
    "stole",
    "lost",
    "never trusted",
    "is afraid of",
    "painted",
    "guards",
    "followed",
    "laughed at",
    "smuggled",
)
_OBJECTS = (
    "a silver dagger",
    "the cursed crown",
    "a barrel of pickled eels",
    "the map to the sunken temple",
    "seven golden goblets",
    "a dragon's egg",
    "the widow's cottage",
    "a cart full of cabbages",
    "the mayor's horse",
    "a crate of fireworks",
    "the blue lantern",
    "a bag of frozen peas",
    "the shepherd's flute",
    "a jar of bees",
    "the lighthouse key",
    "an ivory chess set",
)
_TAILS = (
    "last winter",
    "near the quarry",
    "just before midnight",
    "down by the docks",
    "behind the chapel",
    "for a handful of coins",
    "without a word",
    "in broad daylight",
    "during the festival",
    "under the full moon",
    "twice this week",
    "beyond the marshes",
)
_ENDINGS = (".", "!", "?", ", believe it or not.", ", I swear.", ", or so they say.")


def training_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """The handwritten lines, then generated ones: opener, subject, verb, object, when."""

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    held_out = {s.lower() for s in EVAL_SENTENCES}
    sentences = [s for s in LINES if s.lower() not in held_out]
    seen = set(sentences)
    while len(sentences) < count:
        opener = pick(_OPENERS)
        body = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}"
        if rng.random() < 0.7:
            body += f" {pick(_TAILS)}"
        ending = pick(_ENDINGS)
        if ending == "?":
            line = f"{opener}, did you know {body}?"
        else:
            line = f"{opener}, {body}{ending}"
        if line not in seen and line.lower() not in held_out:
            seen.add(line)
            sentences.append(line)
    assert not held_out & {s.lower() for s in sentences}, "evaluation text leaked into training"
    return sentences


# Augmentation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    inputs: Array  # (frames, inputs)
    labels: npt.NDArray[np.intp]
    raw_ceps: Array  # speech frames' cepstra before normalisation, for the CMN prior


def augment(
    samples: Array, phonemes: list[tuple[float, str]], rng: np.random.Generator
) -> tuple[Array, list[tuple[float, str]]]:
    """Vocal-tract length (resampling), tilt, noise and gain; phoneme times follow."""
    out = samples
    if rng.random() < 0.8:
        # Read as 24 kHz, audio resampled from RATE * factor scales every formant by factor.
        factor = float(rng.uniform(0.86, 1.15))
        out = soxr.resample(out, RATE * factor, RATE).astype(np.float64)
        stretch = out.size / samples.size
        phonemes = [(t * stretch, p) for t, p in phonemes]
    nfft = 1 << (out.size - 1).bit_length()  # FFTs of awkward lengths are slow
    if rng.random() < 0.6:
        slope = float(rng.uniform(-4.0, 4.0))  # dB per octave around 1 kHz
        hz = np.maximum(np.fft.rfftfreq(nfft, 1 / RATE), 50.0)
        gain_db = np.clip(slope * np.log2(hz / 1000.0), -18.0, 12.0)
        out = np.fft.irfft(np.fft.rfft(out, nfft) * 10 ** (gain_db / 20), n=nfft)[: out.size]
    rms = float(np.sqrt(np.mean(out**2))) + 1e-9
    if rng.random() < 0.5:
        snr_db = float(rng.uniform(20.0, 45.0))
        noise = rng.standard_normal(nfft)
        if rng.random() < 0.5:  # pink: -3 dB per octave
            shape = 1 / np.sqrt(np.maximum(np.arange(nfft // 2 + 1), 1))
            noise = np.fft.irfft(np.fft.rfft(noise) * shape, n=nfft)
        noise = noise[: out.size]
        noise *= rms / (float(np.sqrt(np.mean(noise**2))) + 1e-12) * 10 ** (-snr_db / 20)
        out = out + noise
    peak = float(np.max(np.abs(out))) + 1e-9
    target = float(10 ** rng.uniform(-2.0, np.log10(0.95)))
    out = out * (target / peak)
    return np.round(np.clip(out, -1.0, 32767 / 32768) * 32768) / 32768, phonemes


def example(
    text: str, voice: str, speed: float, rng: np.random.Generator, *, clean: bool = False
) -> Example:
    spoken = render(text, voice, speed)
    samples = np.frombuffer(spoken.pcm, dtype="<i2").astype(np.float64) / 32768
    phonemes = list(spoken.phonemes)
    if not clean:
        samples, phonemes = augment(samples, phonemes, rng)
    duration_ms = samples.size * 1000 / RATE
    grid = -(-int(np.ceil(duration_ms)) // HOP_MS)  # analysis frames before the end
    labels = np.asarray(
        [f.viseme for f in exact_frames(phonemes, duration_ms, fps=1000 // HOP_MS)[:grid]]
    )
    raw = FeatureStream(None)
    raw_feats = np.concatenate([raw.push(samples), raw.flush()])[:, :N_FEATURES]
    stream = FeatureStream(PRIOR if PRIOR is not None else np.zeros(N_CEPS))
    feats = np.concatenate([stream.push(samples), stream.flush()])[:, :N_FEATURES]
    n = min(len(labels), len(feats))
    inputs = stack_context(feats)[:n]
    speech = raw_feats[:, 0] * 10 > SPEECH_DB
    return Example(inputs, labels[:n], raw_feats[speech, 1:])


PRIOR: Array | None = None


# Model -----------------------------------------------------------------------------------------


def train(
    x: Array,
    y: npt.NDArray[np.intp],
    hidden: int,
    epochs: int,
    rng: np.random.Generator,
    val: tuple[Array, npt.NDArray[np.intp]] | None = None,
    dropout: float = 0.0,
) -> dict[str, Array]:
    """Softmax cross-entropy MLP (ReLU), Adam with a cosine learning rate, L2 on weights."""
    n, d = x.shape
    k = len(OVR_VISEMES)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    xs = ((x - mean) / std).astype(np.float32)
    params = {
        "w1": (rng.standard_normal((d, hidden)) * np.sqrt(2 / d)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal((hidden, k)) * np.sqrt(1 / hidden)).astype(np.float32),
        "b2": np.zeros(k, np.float32),
    }
    moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in params.items()}
    batch = 256
    steps = epochs * (n // batch)
    step = 0
    lr0, decay = 2e-3, 1e-4
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            idx = order[start : start + batch]
            xb, yb = xs[idx], y[idx]
            h = np.maximum(xb @ params["w1"] + params["b1"], 0)
            live = (h > 0).astype(np.float32)
            if dropout:
                live *= (rng.random(h.shape) >= dropout) / np.float32(1 - dropout)
                h *= live
            logits = h @ params["w2"] + params["b2"]
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(batch), yb] -= 1
            p /= batch
            grads = {"w2": h.T @ p, "b2": p.sum(axis=0)}
            dh = (p @ params["w2"].T) * live
            grads["w1"] = xb.T @ dh
            grads["b1"] = dh.sum(axis=0)
            step += 1
            lr = lr0 * 0.5 * (1 + np.cos(np.pi * step / steps))
            for name, g in grads.items():
                if name.startswith("w"):
                    g = g + decay * params[name]
                m, v = moments[name]
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                mhat = m / (1 - 0.9**step)
                vhat = v / (1 - 0.999**step)
                params[name] -= (lr * mhat / (np.sqrt(vhat) + 1e-8)).astype(np.float32)
        if val is not None:
            acc = accuracy(params, mean, std, *val)
            print(f"  epoch {epoch + 1}: validation frame accuracy {acc:.3f}", flush=True)
    out: dict[str, Array] = {name: p.astype(np.float64) for name, p in params.items()}
    out["mean"] = mean
    out["std"] = std
    return out


def accuracy(
    params: dict[str, npt.NDArray[np.float32]],
    mean: Array,
    std: Array,
    x: Array,
    y: npt.NDArray[np.intp],
) -> float:
    xs = ((x - mean) / std).astype(np.float32)
    h = np.maximum(xs @ params["w1"] + params["b1"], 0)
    return float(np.mean((h @ params["w2"] + params["b2"]).argmax(axis=1) == y))


def main() -> None:
    global PRIOR
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=480)
    parser.add_argument("--renders", type=int, default=5, help="renders per sentence")
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.2)
    args = parser.parse_args()
    started = time.perf_counter()
    nprng = np.random.default_rng(SEED)
    sentences = training_sentences(args.sentences, nprng)
    sentences = [sentences[i] for i in nprng.permutation(len(sentences))]
    n_val = len(sentences) // 12
    voices = list(VOICE_MAP) + (list(TRAIN_VARIANTS) if args.variants else [])
    assert not set(voices) & set(UNSEEN_VOICES)

    # The CMN prior: mean cepstra of clean speech over every voice.
    prior_ceps = [
        example(s, voices[i % len(voices)], 1.0, nprng, clean=True).raw_ceps
        for i, s in enumerate(sentences[:60])
    ]
    PRIOR = np.concatenate(prior_ceps).mean(axis=0)

    def build(texts: list[str], renders: int) -> tuple[Array, npt.NDArray[np.intp]]:
        xs, ys = [], []
        for i, text in enumerate(texts):
            for r in range(renders):
                voice = voices[(i * renders + r) % len(voices)]
                speed = float(nprng.uniform(0.8, 1.3))
                ex = example(text, voice, speed, nprng)
                xs.append(ex.inputs)
                ys.append(ex.labels)
        return np.concatenate(xs), np.concatenate(ys)

    x_val, y_val = build(sentences[:n_val], 1)
    x, y = build(sentences[n_val:], args.renders)
    rendered = time.perf_counter() - started
    print(
        f"{len(sentences) - n_val} training sentences x {args.renders} renders: {len(y)} "
        f"frames, {x.shape[1]} inputs; {len(y_val)} validation frames ({rendered:.0f} s)",
        flush=True,
    )
    params = train(x, y, args.hidden, args.epochs, nprng, val=(x_val, y_val), dropout=args.dropout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        w1=params["w1"].astype(np.float16),
        b1=params["b1"].astype(np.float32),
        w2=params["w2"].astype(np.float16),
        b2=params["b2"].astype(np.float32),
        mean=params["mean"].astype(np.float32),
        std=params["std"].astype(np.float32),
        cmn_prior=PRIOR.astype(np.float32),
        offsets=np.asarray(OFFSETS, dtype=np.int16),
        n_features=np.asarray(N_FEATURES, dtype=np.int16),
    )
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
