"""The viseme vocabulary and how IPA phonemes map onto it.

npcd speaks the 15 Oculus/OVR visemes (the Meta Movement SDK emits the same set, and every
engine's lip-sync plugins know them); a game maps them to its own blendshapes (README, Lip-sync).
Phonemes are IPA strings as eSpeak NG reports them (``ˈaɪɚ``, ``dʒ``, ``ɹ``): stress and length
marks are ignored, and a phoneme that holds several mouth shapes (diphthongs, r-coloured vowels)
maps to several visemes, spread over its duration by `npcd.lipsync.timeline`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "OVR_VISEMES",
    "SIL",
    "VISEME_INDEX",
    "visemes_of",
]

#: Order of the weights in every `VisemeFrame` (and `Ready.viseme_names`).
OVR_VISEMES: Final = (
    "sil",
    "PP",
    "FF",
    "TH",
    "DD",
    "kk",
    "CH",
    "SS",
    "nn",
    "RR",
    "aa",
    "E",
    "ih",
    "oh",
    "ou",
)
VISEME_INDEX: Final[Mapping[str, int]] = MappingProxyType(
    {name: i for i, name in enumerate(OVR_VISEMES)}
)
SIL: Final = 0

#: Sounds that take the mouth shape of whatever follows them (the lips are already moving to
#: the next vowel during an /h/ or a glottal stop).
_INHERIT: Final = frozenset("hɦʔ")
_MARKS: Final = frozenset("ˈˌːˑ'-_.|‖ ")

_SYMBOLS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # affricates first: matched as two-character symbols
        "tʃ": "CH",
        "dʒ": "CH",
        "ts": "SS",
        "dz": "SS",
        # consonants
        "p": "PP",
        "b": "PP",
        "m": "PP",
        "ɱ": "FF",
        "f": "FF",
        "v": "FF",
        "θ": "TH",
        "ð": "TH",
        "t": "DD",
        "d": "DD",
        "ɾ": "DD",
        "k": "kk",
        "g": "kk",
        "ɡ": "kk",
        "ŋ": "kk",
        "x": "kk",
        "ɣ": "kk",
        "q": "kk",
        "ʃ": "CH",
        "ʒ": "CH",
        "ç": "CH",
        "s": "SS",
        "z": "SS",
        "n": "nn",
        "l": "nn",
        "ɫ": "nn",
        "ɲ": "nn",
        "ʎ": "nn",
        "r": "RR",
        "ɹ": "RR",
        "ɻ": "RR",
        "ʁ": "RR",
        "ɚ": "RR",
        "ɝ": "RR",
        # vowels and glides
        "a": "aa",
        "ɑ": "aa",
        "æ": "aa",
        "ʌ": "aa",
        "ɐ": "aa",
        "e": "E",
        "ɛ": "E",
        "ə": "E",
        "ɜ": "E",
        "i": "ih",
        "ɪ": "ih",
        "ᵻ": "ih",
        "ɨ": "ih",
        "y": "ih",
        "j": "ih",
        "o": "oh",
        "ɔ": "oh",
        "ɒ": "oh",
        "ɵ": "oh",
        "ø": "oh",
        "œ": "oh",
        "u": "ou",
        "ʊ": "ou",
        "ɯ": "ou",
        "w": "ou",
        "ʍ": "ou",
        "ʉ": "ou",
    }
)
_INHERITED: Final = -1


def _plain(phoneme: str) -> str:
    decomposed = unicodedata.normalize("NFD", phoneme)
    return "".join(c for c in decomposed if c not in _MARKS and not unicodedata.combining(c))


def visemes_of(phoneme: str) -> tuple[int, ...]:
    """The visemes one phoneme moves through, in order; ``(SIL,)`` for a pause (empty name).

    ``-1`` stands for "the next phoneme's shape" (/h/, glottal stops): resolved by the
    timeline once the next phoneme is known. Unknown symbols are skipped; a phoneme of
    nothing but unknown symbols gives the neutral half-open ``E``.
    """
    plain = _plain(phoneme)
    if not plain:
        return (SIL,)
    shapes: list[int] = []
    i = 0
    while i < len(plain):
        pair = plain[i : i + 2]
        if len(pair) == 2 and pair in _SYMBOLS:
            shape = VISEME_INDEX[_SYMBOLS[pair]]
            i += 2
        else:
            char = plain[i]
            i += 1
            if char in _INHERIT:
                shape = _INHERITED
            elif char in _SYMBOLS:
                shape = VISEME_INDEX[_SYMBOLS[char]]
            else:
                continue
        if not shapes or shapes[-1] != shape:
            shapes.append(shape)
    return tuple(shapes) if shapes else (VISEME_INDEX["E"],)
