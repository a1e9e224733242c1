"""Customer record standardisation (the CRM literature's "process the data" step).

Pure functions over a DataFrame in the canonical ``customers`` shape (``customer_id`` plus any of
first_name, last_name, name, email, phone, address, postcode, country, ...). Nothing is lost: every
column that standardisation changes keeps its original values in ``<col>_raw`` (written once, on the
first pass), so :func:`restore_originals` undoes it exactly and running it twice changes nothing.

Rules (docs/customer_processing.md has the full table):

- text: trim, collapse whitespace runs (tabs, non-breaking spaces) to one space, empty -> missing;
- names: Title Case when written all upper- or all lower-case, mixed case ("McDonald") kept;
- e-mail: lower-case; ``email_valid`` flag; the "+tag" is dropped only in :func:`email_match_key`;
- postcode: upper-case, one space at most between parts; GB postcodes get their standard space;
- country: names and codes to ISO-3166 alpha-2 (``country_valid`` False for unknown values, kept);
- phone: E.164-like ``+<country code><number>`` from the row's country or a default country.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

#: Officially assigned ISO-3166-1 alpha-2 codes (pass through unchanged).
ISO_ALPHA2: frozenset[str] = frozenset(
    re.findall(
        r"[A-Z]{2}",
        """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """,
    )
)

#: Common country names, local names and non-ISO codes -> alpha-2 (keys are match-normalised).
COUNTRY_NAMES: dict[str, str] = {
    # British Isles
    "united kingdom": "GB",
    "uk": "GB",
    "u k": "GB",
    "great britain": "GB",
    "britain": "GB",
    "gbr": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "united kingdom of great britain and northern ireland": "GB",
    "ireland": "IE",
    "eire": "IE",
    "republic of ireland": "IE",
    "irl": "IE",
    "eire ireland": "IE",
    # Europe
    "germany": "DE",
    "deutschland": "DE",
    "deu": "DE",
    "france": "FR",
    "fra": "FR",
    "spain": "ES",
    "espana": "ES",
    "esp": "ES",
    "italy": "IT",
    "italia": "IT",
    "ita": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "nederland": "NL",
    "nld": "NL",
    "belgium": "BE",
    "belgique": "BE",
    "belgie": "BE",
    "bel": "BE",
    "portugal": "PT",
    "prt": "PT",
    "switzerland": "CH",
    "schweiz": "CH",
    "suisse": "CH",
    "che": "CH",
    "austria": "AT",
    "osterreich": "AT",
    "oesterreich": "AT",
    "aut": "AT",
    "denmark": "DK",
    "danmark": "DK",
    "dnk": "DK",
    "sweden": "SE",
    "sverige": "SE",
    "swe": "SE",
    "norway": "NO",
    "norge": "NO",
    "nor": "NO",
    "finland": "FI",
    "suomi": "FI",
    "fin": "FI",
    "iceland": "IS",
    "poland": "PL",
    "polska": "PL",
    "pol": "PL",
    "czech republic": "CZ",
    "czechia": "CZ",
    "cze": "CZ",
    "greece": "GR",
    "grc": "GR",
    "cyprus": "CY",
    "malta": "MT",
    "lithuania": "LT",
    "luxembourg": "LU",
    "luxemburg": "LU",
    # elsewhere
    "usa": "US",
    "u s a": "US",
    "united states": "US",
    "united states of america": "US",
    "america": "US",
    "canada": "CA",
    "can": "CA",
    "australia": "AU",
    "aus": "AU",
    "new zealand": "NZ",
    "japan": "JP",
    "jpn": "JP",
    "korea": "KR",
    "south korea": "KR",
    "republic of korea": "KR",
    "singapore": "SG",
    "hong kong": "HK",
    "israel": "IL",
    "lebanon": "LB",
    "bahrain": "BH",
    "saudi arabia": "SA",
    "united arab emirates": "AE",
    "uae": "AE",
    "brazil": "BR",
    "brasil": "BR",
    "rsa": "ZA",
    "south africa": "ZA",
    "nigeria": "NG",
    "thailand": "TH",
    "india": "IN",
    "china": "CN",
    "mexico": "MX",
}

#: Values that mean "not given": they become missing (the original stays in ``country_raw``).
COUNTRY_PLACEHOLDERS: frozenset[str] = frozenset(
    {"unspecified", "unknown", "n a", "na n", "none", "null", "not specified", "other"}
)

#: Country calling codes for phone normalisation (countries without an entry use the default).
CALLING_CODES: dict[str, str] = {
    "GB": "44",
    "IE": "353",
    "DE": "49",
    "FR": "33",
    "ES": "34",
    "IT": "39",
    "NL": "31",
    "BE": "32",
    "PT": "351",
    "CH": "41",
    "AT": "43",
    "DK": "45",
    "SE": "46",
    "NO": "47",
    "FI": "358",
    "IS": "354",
    "PL": "48",
    "CZ": "420",
    "GR": "30",
    "CY": "357",
    "MT": "356",
    "LT": "370",
    "LU": "352",
    "US": "1",
    "CA": "1",
    "AU": "61",
    "NZ": "64",
    "JP": "81",
    "KR": "82",
    "SG": "65",
    "HK": "852",
    "IL": "972",
    "LB": "961",
    "BH": "973",
    "SA": "966",
    "AE": "971",
    "BR": "55",
    "ZA": "27",
    "NG": "234",
    "TH": "66",
    "IN": "91",
    "CN": "86",
    "MX": "52",
    "JE": "44",
    "GG": "44",
    "IM": "44",
}

#: Countries whose national numbers keep their leading 0 after the country code.
KEEPS_LEADING_ZERO: frozenset[str] = frozenset({"IT", "SM", "VA"})

NAME_COLUMNS: tuple[str, ...] = ("first_name", "last_name", "name", "middle_name")
TEXT_COLUMNS: tuple[str, ...] = (
    "address",
    "address_line1",
    "address_line2",
    "address1",
    "address2",
    "city",
    "town",
)
RAW_SUFFIX = "_raw"
#: Flag columns that standardisation adds (dropped by restore_originals).
FLAG_COLUMNS: tuple[str, ...] = ("email_valid", "phone_valid", "country_valid")

_WS = re.compile(r"\s+")
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,}$"
)
_GB_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})$")
_PHONE_EXT = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)


def _missing(value: Any) -> bool:
    """True for None, NaN, NA and NaT."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def clean_text(value: Any) -> str | None:
    """Trim, collapse inner whitespace to one space; empty or missing -> None."""
    if _missing(value):
        return None
    text = _WS.sub(" ", str(value).replace("\u00a0", " ")).strip()
    return text or None


def fold(text: str) -> str:
    """Lower-case ASCII fold: accents dropped, anything but letters/digits becomes one space."""
    text = text.replace("ß", "ss").replace("ẞ", "SS").replace("æ", "ae").replace("ø", "o")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _WS.sub(" ", re.sub(r"[^a-z0-9]+", " ", ascii_text.lower())).strip()


def _upper1(ch: str) -> str:
    """Upper-case one character unless that changes its length ("ß" stays)."""
    up = ch.upper()
    return up if len(up) == 1 else ch


def standardise_name(value: Any) -> str | None:
    """Clean a personal name; Title Case it only when it is all upper- or all lower-case."""
    text = clean_text(value)
    if text is None:
        return None
    if text == text.lower() or text == text.upper():
        # capitalise after a space, hyphen or apostrophe: "o'brien-smith" -> "O'Brien-Smith"
        text = re.sub(r"(^|[\s\-'’])(\w)", lambda m: m.group(1) + _upper1(m.group(2)), text.lower())
    return text


def standardise_email(value: Any) -> str | None:
    """Clean and lower-case an e-mail address (a leading "mailto:" is dropped)."""
    text = clean_text(value)
    if text is None:
        return None
    text = text.lower().replace(" ", "")
    return text.removeprefix("mailto:") or None


def email_is_valid(email: str | None) -> bool | None:
    """Syntax check of a standardised e-mail; None when missing."""
    if email is None:
        return None
    return bool(_EMAIL.match(email)) and ".." not in email


def email_match_key(email: Any, drop_plus_tag: bool = True) -> str | None:
    """Key used to compare e-mails: standardised, "+tag" dropped; None when missing or invalid."""
    std = standardise_email(email)
    if std is None or not email_is_valid(std):
        return None
    local, _, domain = std.partition("@")
    if drop_plus_tag:
        local = local.split("+", 1)[0]
    return f"{local}@{domain}" if local else None


def standardise_postcode(value: Any, country: str | None = None) -> str | None:
    """Upper-case a postcode with single spaces; GB ones get the space before the inward code."""
    text = clean_text(value)
    if text is None:
        return None
    text = text.upper()
    if country in (None, "GB", "JE", "GG", "IM"):
        m = _GB_POSTCODE.match(text)
        if m:
            return f"{m.group(1)} {m.group(2)}"
    return text


def standardise_country(value: Any) -> tuple[str | None, bool | None]:
    """ISO alpha-2 code of a country name or code, and whether it was recognised."""
    text = clean_text(value)
    if text is None:
        return None, None
    key = fold(text)
    if key in COUNTRY_PLACEHOLDERS or not key:
        return None, None
    if len(text) == 2 and text.upper() in ISO_ALPHA2:
        return text.upper(), True
    code = COUNTRY_NAMES.get(key)
    if code is not None:
        return code, True
    return text, False


def standardise_phone(value: Any, country: str | None = "GB") -> tuple[str | None, bool | None]:
    """E.164-like ``+<digits>`` and a plausibility flag (8 to 15 digits); None when no digits."""
    text = clean_text(value)
    if text is None:
        return None, None
    text = _PHONE_EXT.sub("", text)
    international = text.startswith("+")
    # "+44 (0)20 ..." : the bracketed trunk zero is not dialled from abroad
    digits = re.sub(r"\D", "", re.sub(r"\(0\)", "", text) if international else text)
    if not digits:
        return None, None
    if not international and digits.startswith("00"):
        digits, international = digits[2:], True
        if not digits:
            return None, None
    if not international:
        code = CALLING_CODES.get(country or "")
        if code is None:
            return "+" + digits, False  # no calling code known: keep the digits, flag the value
        if digits.startswith("0") and country not in KEEPS_LEADING_ZERO:
            digits = code + digits[1:]
        elif not (digits.startswith(code) and len(digits) >= 11):
            digits = code + digits
    return "+" + digits, 8 <= len(digits) <= 15


def map_values(values: Iterable[Any], func: Callable[[Any], Any]) -> list[Any]:
    """``func`` of every value, computed once per distinct value (names and towns repeat a lot)."""
    memo: dict[Any, Any] = {}
    out = []
    for v in values:
        key = None if _missing(v) else v
        if key not in memo:
            memo[key] = func(key)
        out.append(memo[key])
    return out


def _map_column(series: pd.Series, func: Callable[[Any], Any]) -> list[Any]:
    """Apply ``func`` to every value of a column (missing values included)."""
    return map_values(series.tolist(), func)


def _strings(values: list[Any], index: pd.Index) -> pd.Series:
    return pd.Series(pd.array(values, dtype="string"), index=index)


def _flags(values: list[Any], index: pd.Index) -> pd.Series:
    return pd.Series(pd.array(values, dtype="boolean"), index=index)


def _after(columns: pd.Index, col: str) -> int:
    """Insert position just after the (unique) column ``col``."""
    loc = columns.get_loc(col)
    if not isinstance(loc, int):
        raise ValueError(f"column {col!r} is not unique")
    return loc + 1


def standardise_customers(df: pd.DataFrame, default_country: str = "GB") -> pd.DataFrame:
    """Standardised copy of a customers frame; originals kept in ``<col>_raw``; idempotent."""
    default_country = standardise_country(default_country)[0] or "GB"
    out = df.copy()

    def source(col: str) -> pd.Series:
        """Original values of a column (from ``<col>_raw`` when a previous pass kept them)."""
        raw = col + RAW_SUFFIX
        return out[raw] if raw in out.columns else out[col]

    def put(col: str, values: list[Any]) -> None:
        raw = col + RAW_SUFFIX
        if raw not in out.columns:
            out.insert(_after(out.columns, col), raw, out[col])
        out[col] = _strings(values, out.index)

    def put_flag(col: str, values: list[Any], after: str) -> None:
        if col in out.columns:
            out[col] = _flags(values, out.index)
        else:
            out.insert(_after(out.columns, after + RAW_SUFFIX), col, _flags(values, out.index))

    for col in NAME_COLUMNS:
        if col in out.columns:
            put(col, _map_column(source(col), standardise_name))
    for col in TEXT_COLUMNS:
        if col in out.columns:
            put(col, _map_column(source(col), clean_text))

    if "country" in out.columns:
        pairs = _map_column(source("country"), standardise_country)
        put("country", [c for c, _ in pairs])
        put_flag("country_valid", [ok for _, ok in pairs], "country")
        countries: list[str | None] = [c if ok else default_country for c, ok in pairs]
    else:
        countries = [default_country] * len(out)

    if "email" in out.columns:
        emails = _map_column(source("email"), standardise_email)
        put("email", emails)
        put_flag("email_valid", [email_is_valid(e) for e in emails], "email")

    if "postcode" in out.columns:
        raw_pc = source("postcode").tolist()
        put(
            "postcode",
            [standardise_postcode(v, c) for v, c in zip(raw_pc, countries, strict=True)],
        )

    if "phone" in out.columns:
        raw_ph = source("phone").tolist()
        pairs = [standardise_phone(v, c) for v, c in zip(raw_ph, countries, strict=True)]
        put("phone", [p for p, _ in pairs])
        put_flag("phone_valid", [ok for _, ok in pairs], "phone")
    return out


def restore_originals(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`standardise_customers`: originals back from ``<col>_raw``, flags dropped."""
    out = df.copy()
    for raw in [c for c in out.columns if str(c).endswith(RAW_SUFFIX)]:
        col = str(raw)[: -len(RAW_SUFFIX)]
        if col in out.columns:
            out[col] = out[raw]
            out = out.drop(columns=[raw])
    return out.drop(columns=[c for c in FLAG_COLUMNS if c in out.columns])
