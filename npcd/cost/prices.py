"""What a backend's tokens cost, and what one response's `Usage` cost in US dollars.

Prices change more often than npcd does, so the built-in table is only a default: a YAML file
(`load_prices`) replaces or adds models. A model npcd has no price for has an unknown cost
(`PriceTable.for_model` returns None), which the caller must treat as such, never as free; only
the embedded offline backend (``npcd-local``) is free by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from npcd.errors import StartupError
from npcd.personas.yamlsource import FieldPath, YamlDocument, YamlSourceError, read_yaml
from npcd.realtime.values import Usage

__all__ = [
    "DEFAULT_PRICES",
    "FREE",
    "MAX_PRICES_FILE_BYTES",
    "PriceTable",
    "Prices",
    "TokenSplit",
    "cost_usd",
    "load_prices",
    "split_usage",
]

#: Largest prices file read, in bytes.
MAX_PRICES_FILE_BYTES: Final = 256 * 1024
#: The embedded offline backend's model id (``npcd-local:<persona id>`` on the wire).
LOCAL_MODEL: Final = "npcd-local"

_PER_TOKEN: Final = 1e-6  # prices are per million tokens
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per 1M tokens of one model, by modality; cached = input served from the prompt cache."""

    text_input: float
    text_cached: float
    text_output: float
    audio_input: float
    audio_cached: float
    audio_output: float

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{field.name}: must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{field.name}: must be a finite number >= 0")


FREE: Final = Prices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _prices(text: tuple[float, float, float], audio: tuple[float, float, float]) -> Prices:
    return Prices(*text, *audio)


_GPT_REALTIME = _prices((4.00, 0.40, 16.00), (32.00, 0.40, 64.00))
_GPT_REALTIME_MINI = _prices((0.60, 0.06, 2.40), (10.00, 0.30, 20.00))

#: OpenAI's published Realtime prices, checked 2026-12 (text input / cached / output, then
#: audio). Override or extend them with a prices file (`load_prices`) when they change.
DEFAULT_PRICES: Final[Mapping[str, Prices]] = MappingProxyType(
    {
        "gpt-realtime": _GPT_REALTIME,
        "gpt-realtime-1.5": _GPT_REALTIME,
        "gpt-realtime-2": _prices((4.00, 0.40, 24.00), (32.00, 0.40, 64.00)),
        "gpt-realtime-mini": _GPT_REALTIME_MINI,
        "gpt-realtime-2.1-mini": _GPT_REALTIME_MINI,
        "gpt-4o-realtime-preview": _prices((5.00, 2.50, 20.00), (40.00, 2.50, 80.00)),
        # The first snapshot's audio cost 2.5 times the later ones'.
        "gpt-4o-realtime-preview-2024-10-01": _prices((5.00, 2.50, 20.00), (100.00, 20.00, 200.00)),
        "gpt-4o-mini-realtime-preview": _prices((0.60, 0.30, 2.40), (10.00, 0.30, 20.00)),
    }
)


class PriceTable:
    """Prices by model id, with the lookups a model id needs (dated snapshots, the local one)."""

    def __init__(self, prices: Mapping[str, Prices]) -> None:
        self._prices = dict(prices)

    def for_model(self, model: str) -> Prices | None:
        """The prices of ``model``, or None when they are unknown (so is its cost).

        A dated snapshot (``gpt-realtime-2025-08-28``) costs what its model does. The offline
        backend (``npcd-local``, ``npcd-local:<persona>``) is free unless the table prices it.
        """
        found = self._prices.get(model)
        if found is not None:
            return found
        undated = _SNAPSHOT.sub("", model)
        if undated != model and undated in self._prices:
            return self._prices[undated]
        if model == LOCAL_MODEL or model.startswith(f"{LOCAL_MODEL}:"):
            return self._prices.get(LOCAL_MODEL, FREE)
        return None

    @property
    def models(self) -> tuple[str, ...]:
        """The model ids priced, sorted (for start-up logs and tests)."""
        return tuple(sorted(self._prices))


@dataclass(frozen=True, slots=True)
class TokenSplit:
    """One response's tokens by what they are billed as; ``*_cached`` are the cached part of
    ``*_input``."""

    text_input: float
    text_cached: float
    text_output: float
    audio_input: float
    audio_cached: float
    audio_output: float


def split_usage(usage: Usage) -> TokenSplit:
    """The billed kinds of ``usage`` (prices and metrics count them alike).

    Token details may be missing: without input or output details everything counts as text;
    beta reports only a cached total, which is split between text and audio in proportion to
    the input. Image tokens are left out (npcd sends no images).
    """
    text_in, audio_in = _count(usage.input_tokens), 0.0
    cached_text = cached_audio = 0.0
    details = usage.input_token_details
    if details is not None:
        if details.text_tokens is not None or details.audio_tokens is not None:
            text_in, audio_in = _count(details.text_tokens), _count(details.audio_tokens)
        split = details.cached_tokens_details
        if split is not None and (split.text_tokens is not None or split.audio_tokens is not None):
            cached_text, cached_audio = _count(split.text_tokens), _count(split.audio_tokens)
        else:
            cached = _count(details.cached_tokens)
            if text_in + audio_in > 0:
                cached_audio = cached * audio_in / (text_in + audio_in)
                cached_text = cached - cached_audio
    text_out, audio_out = _count(usage.output_tokens), 0.0
    out_details = usage.output_token_details
    if out_details is not None and (
        out_details.text_tokens is not None or out_details.audio_tokens is not None
    ):
        text_out, audio_out = _count(out_details.text_tokens), _count(out_details.audio_tokens)
    return TokenSplit(
        text_input=text_in,
        text_cached=min(cached_text, text_in),
        text_output=text_out,
        audio_input=audio_in,
        audio_cached=min(cached_audio, audio_in),
        audio_output=audio_out,
    )


def cost_usd(usage: Usage, prices: Prices) -> float:
    """The price of one response's usage, in USD (never negative; see `split_usage`)."""
    t = split_usage(usage)
    total = (
        (t.text_input - t.text_cached) * prices.text_input
        + t.text_cached * prices.text_cached
        + (t.audio_input - t.audio_cached) * prices.audio_input
        + t.audio_cached * prices.audio_cached
        + t.text_output * prices.text_output
        + t.audio_output * prices.audio_output
    )
    return max(0.0, total * _PER_TOKEN)


def _count(tokens: int | None) -> float:
    """A token count from the backend, with absent and nonsensical (negative) counts as 0."""
    return float(tokens) if tokens is not None and tokens > 0 else 0.0


# -- the prices file ---------------------------------------------------------------------------

_MODALITIES: Final = ("text", "audio")
_KINDS: Final = ("input", "cached", "output")
_MAX_MODEL_CHARS: Final = 200


def load_prices(path: Path) -> PriceTable:
    """`DEFAULT_PRICES` with the models of the YAML file at ``path`` replacing or added to them.

    Each model entry gives all six prices (``text``/``audio`` x ``input``/``cached``/``output``,
    numbers >= 0, USD per 1M tokens). Any mistake is a `StartupError` naming file, line and field.
    """
    try:
        document = read_yaml(path, max_bytes=MAX_PRICES_FILE_BYTES)
    except YamlSourceError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise StartupError(f"{where}: {exc.message}") from None
    table = dict(DEFAULT_PRICES)
    data = document.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _problem(path, document, (), "(top level)", "must be a mapping of model ids")
    for model, entry in data.items():
        if not isinstance(model, str) or not model or len(model) > _MAX_MODEL_CHARS:
            raise _problem(
                path,
                document,
                (str(model),),
                str(model),
                f"a model id must be text of 1 to {_MAX_MODEL_CHARS} characters",
            )
        table[model] = _entry(path, document, model, entry)
    return PriceTable(table)


def _entry(path: Path, document: YamlDocument, model: str, entry: Any) -> Prices:
    numbers: dict[str, float] = {}
    _check_mapping(path, document, (model,), model, entry, _MODALITIES)
    for modality in _MODALITIES:
        where = (model, modality)
        group = entry[modality]
        _check_mapping(path, document, where, f"{model}.{modality}", group, _KINDS)
        for kind in _KINDS:
            value = group[kind]
            name = f"{model}.{modality}.{kind}"
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                hint = ""
                if isinstance(value, str) and "e" in value.lower():
                    hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
                raise _problem(path, document, (*where, kind), name, f"must be a number >= 0{hint}")
            numbers[f"{modality}_{kind}"] = float(value)
    return Prices(**numbers)


def _check_mapping(
    path: Path,
    document: YamlDocument,
    where: FieldPath,
    name: str,
    value: Any,
    keys: tuple[str, ...],
) -> None:
    expected = " and ".join(keys)
    if not isinstance(value, dict):
        raise _problem(path, document, where, name, f"must be a mapping of {expected}")
    for key in value:
        if key not in keys:
            raise _problem(
                path,
                document,
                (*where, str(key)),
                f"{name}.{key}",
                f"unknown key (expected {expected})",
            )
    for key in keys:
        if key not in value:
            raise _problem(path, document, where, f"{name}.{key}", "required")


def _problem(
    path: Path, document: YamlDocument, where: FieldPath, name: str, message: str
) -> StartupError:
    origin = document.origin(where)
    line = f":{origin.line}" if origin is not None else ""
    return StartupError(f"{path}{line}: {name}: {message}")
