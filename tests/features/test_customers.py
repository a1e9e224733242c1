"""Customer record standardisation: rules, originals kept, reversible, idempotent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.customers import (
    clean_text,
    email_is_valid,
    email_match_key,
    restore_originals,
    standardise_country,
    standardise_customers,
    standardise_email,
    standardise_name,
    standardise_phone,
    standardise_postcode,
)


def _raw_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["1", "2", "3", "4"],
            "first_name": ["  JOHN ", "mary-jane", None, "McDonald"],
            "last_name": ["o'brien", "SMITH\tJONES", "x", "  "],
            "email": [" John.Smith+shop@Example.COM ", "bad@", None, "a@b.co"],
            "phone": ["+44 (0)20 7946 0018", "020 7946 0018 ext 12", "030 1234567", "n/a"],
            "address": ["10  High\u00a0Street", None, "Hauptstraße 5", "1 Rose Ave"],
            "postcode": ["sw1a1aa", " ec1a  1bb ", "10115", "d02 x285"],
            "country": ["United Kingdom", "uk", "Deutschland", "EIRE"],
            "signup_date": pd.to_datetime(["2020-01-01", "2021-02-03", None, "2022-03-04"]),
        }
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  a  b\t c ", "a b c"),
        ("\u00a0x\u00a0", "x"),
        ("   ", None),
        ("", None),
        (None, None),
        (np.nan, None),
        (12, "12"),
    ],
)
def test_clean_text_trims_and_collapses_whitespace(raw: object, expected: str | None) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("JOHN", "John"),
        ("  mary  ann ", "Mary Ann"),
        ("o'brien-smith", "O'Brien-Smith"),
        ("McDonald", "McDonald"),  # deliberate mixed case is kept
        ("van der BERG", "van der BERG"),
        ("", None),
    ],
)
def test_names_title_case_only_single_case_input(raw: str, expected: str | None) -> None:
    assert standardise_name(raw) == expected


def test_email_lower_case_keeps_tag_but_match_key_drops_it() -> None:
    stored = standardise_email("  John.Smith+shop@Example.COM ")
    assert stored == "john.smith+shop@example.com"
    assert email_is_valid(stored)
    assert email_match_key(" John.Smith+shop@Example.COM") == "john.smith@example.com"
    assert email_match_key("John.Smith+shop@Example.COM", drop_plus_tag=False) == stored


@pytest.mark.parametrize("bad", ["bad@", "no-at.example.com", "a@b", "a..b@example.com", "a b@c"])
def test_invalid_emails_are_flagged_and_have_no_match_key(bad: str) -> None:
    assert email_is_valid(standardise_email(bad)) is False
    assert email_match_key(bad) is None


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("sw1a1aa", "GB", "SW1A 1AA"),
        (" ec1a  1bb ", "GB", "EC1A 1BB"),
        ("m1 1ae", None, "M1 1AE"),
        ("10115", "DE", "10115"),
        ("1234  ab", "NL", "1234 AB"),
        ("d02x285", "IE", "D02X285"),  # not reshaped outside GB
    ],
)
def test_postcodes(raw: str, country: str | None, expected: str) -> None:
    assert standardise_postcode(raw, country) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("United Kingdom", ("GB", True)),
        ("UK", ("GB", True)),
        ("Great Britain", ("GB", True)),
        (" great  britain ", ("GB", True)),
        ("Deutschland", ("DE", True)),
        ("EIRE", ("IE", True)),
        ("RSA", ("ZA", True)),
        ("gb", ("GB", True)),
        ("FR", ("FR", True)),
        ("Österreich", ("AT", True)),
        ("Channel Islands", ("Channel Islands", False)),  # unknown: kept and flagged
        ("XX", ("XX", False)),  # not an assigned code
        ("Unspecified", (None, None)),
        (None, (None, None)),
    ],
)
def test_countries_to_iso_alpha2(raw: str | None, expected: tuple[str | None, bool | None]) -> None:
    assert standardise_country(raw) == expected


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+44 (0)20 7946 0018", "GB", ("+442079460018", True)),
        ("020 7946 0018", "GB", ("+442079460018", True)),
        ("0044 20 7946 0018", "DE", ("+442079460018", True)),  # international form wins
        ("07700 900123 ext. 12", "GB", ("+447700900123", True)),
        ("(030) 123-4567", "DE", ("+49301234567", True)),
        ("212-555-1234", "US", ("+12125551234", True)),
        ("1 212 555 1234", "US", ("+12125551234", True)),
        ("06 1234 5678", "IT", ("+390612345678", True)),  # Italy keeps its leading 0
        ("20 7946 0018", "GB", ("+442079460018", True)),
        ("123", "GB", ("+44123", False)),
        ("n/a", "GB", (None, None)),
        ("5551234567", "ZZ", ("+5551234567", False)),  # no calling code known
    ],
)
def test_phones_to_e164(raw: str, country: str, expected: tuple[str | None, bool | None]) -> None:
    assert standardise_phone(raw, country) == expected


def test_standardise_customers_columns_flags_and_originals() -> None:
    raw = _raw_customers()
    out = standardise_customers(raw)
    assert out["first_name"].tolist()[:2] == ["John", "Mary-Jane"]
    assert out["last_name"].tolist()[:2] == ["O'Brien", "Smith Jones"]
    assert pd.isna(out.loc[3, "last_name"])
    assert out["email"].tolist()[0] == "john.smith+shop@example.com"
    assert out["email_valid"].tolist()[:2] == [True, False]
    assert out["postcode"].tolist() == ["SW1A 1AA", "EC1A 1BB", "10115", "D02 X285"]
    assert out["country"].tolist() == ["GB", "GB", "DE", "IE"]
    assert out["country_valid"].all()
    # the row's own country gives the calling code; the default only fills gaps
    assert out["phone"].tolist()[:3] == ["+442079460018", "+442079460018", "+49301234567"]
    assert pd.isna(out.loc[3, "phone"])
    assert out["address"].tolist()[0] == "10 High Street"
    for col in ("first_name", "email", "phone", "postcode", "country", "address"):
        pd.testing.assert_series_equal(out[col + "_raw"], raw[col], check_names=False)
    assert "signup_date_raw" not in out.columns  # untouched columns get no copy
    pd.testing.assert_frame_equal(raw, _raw_customers())  # the input is not modified


def test_unknown_country_is_kept_flagged_and_phone_uses_default() -> None:
    raw = pd.DataFrame({"customer_id": ["1"], "country": ["Atlantis"], "phone": ["020 7946 0018"]})
    out = standardise_customers(raw, default_country="United Kingdom")
    assert out.loc[0, "country"] == "Atlantis"
    assert not out.loc[0, "country_valid"]
    assert out.loc[0, "phone"] == "+442079460018"


def test_standardisation_is_reversible_and_idempotent() -> None:
    raw = _raw_customers()
    once = standardise_customers(raw)
    twice = standardise_customers(once)
    pd.testing.assert_frame_equal(once, twice)
    pd.testing.assert_frame_equal(restore_originals(once), raw)
    pd.testing.assert_frame_equal(restore_originals(twice), raw)


def test_frame_with_only_ids_is_returned_unchanged() -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b"], "segment": ["x", "y"]})
    pd.testing.assert_frame_equal(standardise_customers(raw), raw)


_text = st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=30))


@settings(max_examples=200, deadline=None)
@given(value=_text, country=st.sampled_from(["GB", "DE", "IT", "US", "ZZ"]))
def test_value_rules_are_idempotent(value: str | None, country: str) -> None:
    name = standardise_name(value)
    assert standardise_name(name) == name
    email = standardise_email(value)
    assert standardise_email(email) == email
    postcode = standardise_postcode(value, country)
    assert standardise_postcode(postcode, country) == postcode
    phone, _ = standardise_phone(value, country)
    assert standardise_phone(phone, country)[0] == phone
    code, ok = standardise_country(value)
    assert standardise_country(code) == (code, ok)
