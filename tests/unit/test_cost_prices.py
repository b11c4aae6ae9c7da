"""Prices: the built-in table, model-id lookups, the prices file and the cost of one usage."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from npcd.cost.prices import (
    DEFAULT_PRICES,
    FREE,
    MAX_PRICES_FILE_BYTES,
    Prices,
    PriceTable,
    cost_usd,
    load_prices,
)
from npcd.errors import StartupError
from npcd.realtime.values import (
    CachedTokenDetails,
    InputTokenDetails,
    OutputTokenDetails,
    Usage,
)

REALTIME = DEFAULT_PRICES["gpt-realtime"]
MINI = DEFAULT_PRICES["gpt-realtime-mini"]
# Distinct prices per field, so a token counted in the wrong bucket changes the total.
PROBE = Prices(1.0, 2.0, 3.0, 5.0, 7.0, 11.0)


def test_defaults_are_the_published_prices() -> None:
    assert REALTIME == Prices(4.00, 0.40, 16.00, 32.00, 0.40, 64.00)
    assert DEFAULT_PRICES["gpt-realtime-1.5"] == REALTIME
    assert DEFAULT_PRICES["gpt-realtime-2"] == Prices(4.00, 0.40, 24.00, 32.00, 0.40, 64.00)
    assert MINI == Prices(0.60, 0.06, 2.40, 10.00, 0.30, 20.00)
    assert DEFAULT_PRICES["gpt-realtime-2.1-mini"] == MINI
    assert DEFAULT_PRICES["gpt-4o-realtime-preview"] == Prices(5.0, 2.5, 20.0, 40.0, 2.5, 80.0)
    assert DEFAULT_PRICES["gpt-4o-mini-realtime-preview"] == Prices(
        0.60, 0.30, 2.40, 10.00, 0.30, 20.00
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-realtime", REALTIME),
        ("gpt-realtime-2025-08-28", REALTIME),
        ("gpt-4o-realtime-preview-2024-12-17", DEFAULT_PRICES["gpt-4o-realtime-preview"]),
        ("gpt-realtime-mini-2025-10-06", MINI),
        ("npcd-local", FREE),
        ("npcd-local:blacksmith", FREE),
        ("gpt-realtime-9", None),
        ("gpt-realtime-20250828", None),
        ("my-model-2025-08-28", None),
        ("npcd-localish", None),
        ("", None),
    ],
)
def test_for_model(model: str, expected: Prices | None) -> None:
    assert PriceTable(DEFAULT_PRICES).for_model(model) == expected


def test_a_priced_local_backend_and_exact_snapshots_win() -> None:
    dated = Prices(9.0, 9.0, 9.0, 9.0, 9.0, 9.0)
    table = PriceTable({**DEFAULT_PRICES, "npcd-local": PROBE, "gpt-realtime-2025-08-28": dated})
    assert table.for_model("npcd-local:gate_guard") == PROBE
    assert table.for_model("npcd-local") == PROBE
    assert table.for_model("gpt-realtime-2025-08-28") == dated
    assert table.for_model("gpt-realtime-2026-01-01") == REALTIME


def test_prices_refuse_negative_and_non_finite_numbers() -> None:
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="audio_output"):
            Prices(1, 1, 1, 1, 1, bad)


# -- cost_usd ----------------------------------------------------------------------------------


def test_ga_audio_with_cached_split() -> None:
    usage = Usage(
        input_tokens=1000,
        output_tokens=500,
        input_token_details=InputTokenDetails(
            text_tokens=0,
            audio_tokens=1000,
            cached_tokens=200,
            cached_tokens_details=CachedTokenDetails(text_tokens=0, audio_tokens=200),
        ),
        output_token_details=OutputTokenDetails(text_tokens=0, audio_tokens=500),
    )
    assert cost_usd(usage, REALTIME) == pytest.approx((800 * 32 + 200 * 0.4 + 500 * 64) / 1e6)


def test_every_bucket_has_its_own_price() -> None:
    usage = Usage(
        input_tokens=1100,
        output_tokens=90,
        input_token_details=InputTokenDetails(
            text_tokens=100,
            audio_tokens=1000,
            cached_tokens=340,
            cached_tokens_details=CachedTokenDetails(text_tokens=40, audio_tokens=300),
        ),
        output_token_details=OutputTokenDetails(text_tokens=20, audio_tokens=70),
    )
    expected = 60 * 1 + 40 * 2 + 20 * 3 + 700 * 5 + 300 * 7 + 70 * 11
    assert cost_usd(usage, PROBE) == pytest.approx(expected / 1e6)


def test_beta_cached_total_is_split_like_the_input() -> None:
    # 25% text, 75% audio; 400 cached -> 100 cached text, 300 cached audio.
    usage = Usage(
        input_tokens=800,
        output_tokens=0,
        input_token_details=InputTokenDetails(text_tokens=200, audio_tokens=600, cached_tokens=400),
    )
    expected = 100 * 1 + 100 * 2 + 300 * 5 + 300 * 7
    assert cost_usd(usage, PROBE) == pytest.approx(expected / 1e6)


def test_without_details_everything_is_text() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    assert cost_usd(usage, MINI) == pytest.approx((1000 * 0.60 + 100 * 2.40) / 1e6)
    empty = Usage(
        input_tokens=10,
        output_tokens=10,
        input_token_details=InputTokenDetails(),
        output_token_details=OutputTokenDetails(),
    )
    assert cost_usd(empty, PROBE) == pytest.approx((10 * 1 + 10 * 3) / 1e6)


@pytest.mark.parametrize(
    "usage",
    [
        Usage(),
        Usage(input_tokens=-50, output_tokens=-1),
        Usage(
            input_tokens=10,
            input_token_details=InputTokenDetails(text_tokens=-10, audio_tokens=-5),
            output_token_details=OutputTokenDetails(audio_tokens=-7),
        ),
    ],
)
def test_nothing_or_nonsense_costs_nothing(usage: Usage) -> None:
    assert cost_usd(usage, PROBE) == 0.0


def test_more_cached_than_input_is_capped_at_the_input() -> None:
    usage = Usage(
        input_tokens=100,
        input_token_details=InputTokenDetails(
            text_tokens=100,
            audio_tokens=0,
            cached_tokens=500,
            cached_tokens_details=CachedTokenDetails(text_tokens=500, audio_tokens=0),
        ),
    )
    assert cost_usd(usage, PROBE) == pytest.approx(100 * 2 / 1e6)


# -- the prices file ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_file_replaces_and_adds_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        gpt-realtime:
          text: {input: 1, cached: 0, output: 2.5}
          audio: {input: 3, cached: 0.1, output: 4}
        acme-voice:
          text: {input: 1, cached: 1, output: 1}
          audio: {input: 1, cached: 1, output: 1}
        npcd-local:
          text: {input: 1.0, cached: 2.0, output: 3.0}
          audio: {input: 5.0, cached: 7.0, output: 11.0}
        """,
    )
    table = load_prices(path)
    assert table.for_model("gpt-realtime-2025-08-28") == Prices(1, 0, 2.5, 3, 0.1, 4)
    assert table.for_model("acme-voice") == Prices(1, 1, 1, 1, 1, 1)
    assert table.for_model("npcd-local:blacksmith") == PROBE
    assert table.for_model("gpt-realtime-mini") == MINI, "models the file omits keep defaults"


def test_an_empty_file_keeps_the_defaults(tmp_path: Path) -> None:
    assert load_prices(write(tmp_path, "# nothing yet\n")).models == tuple(sorted(DEFAULT_PRICES))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            """,
            ":2: gpt-realtime.text.output: required",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: 16.0}
              audio:
                input: 32.0
                cached: 0.4
                output: -64.0
            """,
            ":6: gpt-realtime.audio.output: must be a number >= 0",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: "16"}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            """,
            ":2: gpt-realtime.text.output: must be a number >= 0",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: yes}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            """,
            ":2: gpt-realtime.text.output: must be a number >= 0",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: .nan}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            """,
            ":2: gpt-realtime.text.output: must be a number >= 0",
        ),
        (
            """
            gpt-realtime:
              text: {input: 1e-3, cached: 0.4, output: 1}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            """,
            "gpt-realtime.text.input: must be a number >= 0 (YAML reads 1e-3 as text",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: 16.0}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
              image: {input: 5.0}
            """,
            ":4: gpt-realtime.image: unknown key (expected text and audio)",
        ),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: 16.0}
            """,
            ":1: gpt-realtime.audio: required",
        ),
        ("gpt-realtime: 4.0\n", ":1: gpt-realtime: must be a mapping of text and audio"),
        ("- gpt-realtime\n", ":1: (top level): must be a mapping of model ids"),
        (
            """
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: 16.0}
              audio: {input: 32.0, cached: 0.4, output: 64.0}
            gpt-realtime:
              text: {input: 4.0, cached: 0.4, output: 16.0}
            """,
            ":4: YAML syntax: duplicate key 'gpt-realtime'",
        ),
        ("gpt-realtime: [\n", "prices.yaml:2: YAML syntax"),
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StartupError) as caught:
        load_prices(path)
    assert caught.value.message.startswith(str(path)), caught.value.message
    assert message in caught.value.message, caught.value.message


def test_oversized_and_missing_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("# " + "x" * MAX_PRICES_FILE_BYTES + "\n")
    with pytest.raises(StartupError, match="larger than 256 KiB"):
        load_prices(path)
    with pytest.raises(StartupError, match="cannot read file"):
        load_prices(tmp_path / "missing.yaml")
