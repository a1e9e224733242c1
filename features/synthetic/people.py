"""Customer records: fake but deterministic names, addresses, postcodes, phones, e-mails and
consent, with duplicate records and households as ground truth.

Personal data come from small word lists per country (``example.*`` e-mail domains). About 1 % of
customers are duplicate records of another customer (same person, varied casing and whitespace)
and about 12 % join another customer's household (same last name and address).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.synthetic.columns import encoded, id_strings
from features.synthetic.config import SyntheticConfig

COUNTRIES = ("GB", "DE", "FR", "NL", "BE", "IE", "ES", "IT")
COUNTRY_SHARES = (0.30, 0.20, 0.15, 0.10, 0.05, 0.05, 0.08, 0.07)
CALLING_CODES = ("44", "49", "33", "31", "32", "353", "34", "39")
NUMBER_FIRST = (True, False, True, False, False, True, False, False)


def _split(words: str) -> tuple[str, ...]:
    """Word list from a '|'-separated string (keeps the lists compact)."""
    return tuple(words.split("|"))


REGIONS = (
    _split("London|South East|North West|Scotland|Wales|West Midlands|Yorkshire"),
    _split("Bayern|Berlin|Hamburg|Hessen|Nordrhein-Westfalen|Sachsen|Bremen"),
    _split("Île-de-France|Auvergne-Rhône-Alpes|Occitanie|Hauts-de-France|Bretagne"),
    _split("Noord-Holland|Zuid-Holland|Utrecht|Noord-Brabant|Gelderland"),
    _split("Flanders|Wallonia|Brussels"),
    _split("Dublin|Cork|Galway|Limerick"),
    _split("Madrid|Cataluña|Andalucía|Valencia"),
    _split("Lombardia|Lazio|Campania|Veneto|Piemonte"),
)
FIRST_NAMES = (
    _split(
        "Oliver|George|Harry|Jack|James|Amelia|Olivia|Emily|Isla|Sophie|Thomas|Charlotte|"
        "William|Grace"
    ),
    _split("Lukas|Leon|Finn|Paul|Jonas|Mia|Emma|Hannah|Lea|Anna|Felix|Sophia|Max|Laura"),
    _split("Lucas|Hugo|Louis|Jules|Gabriel|Léa|Chloé|Manon|Camille|Inès|Arthur|Jade|Nathan|Louise"),
    _split("Daan|Sem|Lucas|Milan|Levi|Julia|Sophie|Tess|Fenna|Sara|Bram|Noor|Jesse|Lotte"),
    _split("Arthur|Noah|Jules|Louis|Adam|Olivia|Emma|Louise|Marie|Elena|Victor|Lina|Liam|Alice"),
    _split("Jack|Noah|James|Conor|Oisín|Emily|Grace|Fiadh|Sophie|Aoife|Seán|Ciara|Darragh|Niamh"),
    _split(
        "Hugo|Martín|Lucas|Mateo|Pablo|Lucía|Sofía|María|Paula|Julia|Daniel|Carmen|Alejandro|Elena"
    ),
    _split(
        "Leonardo|Francesco|Alessandro|Lorenzo|Mattia|Sofia|Giulia|Aurora|Alice|Ginevra|"
        "Marco|Chiara|Andrea|Martina"
    ),
)
LAST_NAMES = (
    _split(
        "Smith|Jones|Taylor|Brown|Williams|Wilson|Johnson|Davies|Patel|Robinson|Wright|"
        "Thompson|Evans|Walker|White|Roberts"
    ),
    _split(
        "Müller|Schmidt|Schneider|Fischer|Weber|Meyer|Wagner|Becker|Schulz|Hoffmann|Koch|"
        "Richter|Klein|Wolf|Neumann|Braun"
    ),
    _split(
        "Martin|Bernard|Dubois|Thomas|Robert|Richard|Petit|Durand|Leroy|Moreau|Simon|"
        "Laurent|Lefebvre|Michel|Garcia|Fournier"
    ),
    _split(
        "de Jong|Jansen|de Vries|van den Berg|van Dijk|Bakker|Janssen|Visser|Smit|Meijer|"
        "de Boer|Mulder|de Groot|Bos|Vos|Peters"
    ),
    _split(
        "Peeters|Janssens|Maes|Jacobs|Mertens|Willems|Claes|Goossens|Wouters|De Smet|"
        "Dubois|Lambert|Dupont|Martens|Leclercq|Hermans"
    ),
    _split(
        "Murphy|Kelly|O'Sullivan|Walsh|Smith|O'Brien|Byrne|Ryan|O'Connor|O'Neill|Reilly|"
        "Doyle|McCarthy|Gallagher|Doherty|Kennedy"
    ),
    _split(
        "García|Rodríguez|González|Fernández|López|Martínez|Sánchez|Pérez|Gómez|Martín|"
        "Jiménez|Ruiz|Hernández|Díaz|Moreno|Muñoz"
    ),
    _split(
        "Rossi|Russo|Ferrari|Esposito|Bianchi|Romano|Colombo|Ricci|Marino|Greco|Bruno|"
        "Gallo|Conti|De Luca|Costa|Giordano"
    ),
)
STREETS = (
    _split(
        "High Street|Station Road|Church Lane|Park Avenue|Victoria Road|Mill Lane|"
        "Green Lane|Kings Road|Queen Street|New Road"
    ),
    _split(
        "Hauptstraße|Schulstraße|Gartenstraße|Bahnhofstraße|Dorfstraße|Bergstraße|"
        "Lindenweg|Kirchstraße|Waldstraße|Ringstraße"
    ),
    _split(
        "rue de la Paix|rue Victor Hugo|avenue Jean Jaurès|rue de la Gare|rue Pasteur|"
        "boulevard Voltaire|rue des Écoles|place de l'Église|rue du Moulin|rue Nationale"
    ),
    _split(
        "Kerkstraat|Dorpsstraat|Molenweg|Schoolstraat|Stationsweg|Hoofdstraat|"
        "Julianastraat|Beatrixlaan|Nieuwstraat|Parallelweg"
    ),
    _split(
        "Kerkstraat|Rue de la Station|Stationsstraat|Rue de l'Église|Nieuwstraat|"
        "Dorpsstraat|Rue du Moulin|Molenstraat|Grand-Place|Rue Haute"
    ),
    _split(
        "Main Street|Church Road|Strand Road|Bridge Street|Patrick Street|"
        "O'Connell Street|Castle Street|Mill Road|Green Road|Abbey Street"
    ),
    _split(
        "Calle Mayor|Calle Real|Calle de la Iglesia|Avenida de la Constitución|"
        "Calle del Sol|Plaza Mayor|Calle Nueva|Calle San Juan|Calle del Carmen|Calle Luna"
    ),
    _split(
        "Via Roma|Via Garibaldi|Via Mazzini|Via Dante|Corso Italia|Via Verdi|Via Cavour|"
        "Via Marconi|Piazza della Repubblica|Via Vittorio Emanuele"
    ),
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARES = (0.10, 0.20, 0.22, 0.20, 0.15, 0.13)
POSTCODE_LETTERS = "ABCDEFGHJKLMNPRSTUWXYZ"
DUPLICATE_SHARE = 0.01
HOUSEHOLD_JOIN_SHARE = 0.12
CONSENT_EMAIL = 0.78
CONSENT_SMS_GIVEN_EMAIL = (0.20, 0.55)
CONSENT_PHONE_GIVEN_SMS = (0.15, 0.38)

CUSTOMER_COLUMNS = (
    "customer_id",
    "signup_date",
    "country",
    "region",
    "age_band",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "postcode",
    "consent_email",
    "consent_sms",
    "consent_phone",
)


def _draw_words(
    rng: np.random.Generator, options: tuple[tuple[str, ...], ...], country: np.ndarray
) -> np.ndarray:
    """Index into the flattened word lists of one word per row, from the row's country list."""
    sizes = np.array([len(words) for words in options])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return offsets[country] + (rng.random(country.size) * sizes[country]).astype(np.int64)


def _vocabulary(options: tuple[tuple[str, ...], ...]) -> pa.Array:
    """The flattened word lists."""
    return pa.array([w for words in options for w in words])


def _digits(rng: np.random.Generator, n: int, width: int, low: int = 0) -> pa.Array:
    """Random zero-padded digit strings of a fixed width."""
    values = rng.integers(low, 10**width, n)
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def _letters(rng: np.random.Generator, n: int, k: int) -> pa.Array:
    """Random strings of ``k`` postcode letters."""
    letters = pa.array(list(POSTCODE_LETTERS))
    parts = [letters.take(pa.array(rng.integers(0, len(POSTCODE_LETTERS), n))) for _ in range(k)]
    return pc.binary_join_element_wise(*parts, "")


def _postcodes(rng: np.random.Generator, country: np.ndarray) -> pa.Array:
    """Country-shaped postcodes (GB 'AB1 2CD', NL '1234 AB', IE 'D02 X285', 4 or 5 digits)."""
    parts: list[pa.Array] = []
    positions: list[np.ndarray] = []
    for c, code in enumerate(COUNTRIES):
        rows = np.flatnonzero(country == c)
        m = rows.size
        if code == "GB":
            letters, d1, d2 = _letters(rng, m, 2), _digits(rng, m, 1, 1), _digits(rng, m, 1)
            part = pc.binary_join_element_wise(letters, d1, " ", d2, _letters(rng, m, 2), "")
        elif code == "NL":
            digits, letters = _digits(rng, m, 4, 1000), _letters(rng, m, 2)
            part = pc.binary_join_element_wise(digits, " ", letters, "")
        elif code == "IE":
            area, unit = _letters(rng, m, 1), _letters(rng, m, 1)
            part = pc.binary_join_element_wise(
                area, _digits(rng, m, 2), " ", unit, _digits(rng, m, 3), ""
            )
        else:
            part = _digits(rng, m, 4 if code == "BE" else 5, 1000)
        parts.append(part)
        positions.append(rows)
    where = np.empty(country.size, np.int64)
    where[np.concatenate(positions)] = np.arange(country.size)
    return pa.concat_arrays(parts).take(pa.array(where))


def _varied(rng: np.random.Generator, values: pa.Array, force: bool) -> pa.Array:
    """Upper-cased, lower-cased or space-padded copies of ``values`` (duplicate-record noise)."""
    kind = rng.integers(1 if force else 0, 4, len(values))
    out = pc.if_else(pa.array(kind == 1), pc.utf8_upper(values), values)
    out = pc.if_else(pa.array(kind == 2), pc.utf8_lower(values), out)
    return pc.if_else(pa.array(kind == 3), pc.binary_join_element_wise(values, " ", ""), out)


def _ascii_lower(values: pa.Array) -> pa.Array:
    """Lower-case ASCII letters only, for e-mail addresses ('Müller' -> 'muller')."""
    folded = pc.utf8_lower(pc.utf8_normalize(values, form="NFKD"))
    return pc.replace_substring_regex(folded, "[^a-z]", "")


def customers_tables(
    cfg: SyntheticConfig, index: int, offset: int, signup_day: np.ndarray, id_width: int
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Customers of a chunk with fake personal data, plus the duplicate and household truth."""
    rng = np.random.default_rng([cfg.seed, 2, index])
    n = signup_day.size
    global_index = offset + np.arange(n)
    customer_id = id_strings("C", global_index + 1, id_width)

    # Roles: a duplicate record belongs to another customer's person; a household joiner takes a
    # head's country, last name, address and postcode (and sometimes the landline).
    order = rng.permutation(n)
    n_dup = round(DUPLICATE_SHARE * n) if n >= 10 else 0
    n_join = round(HOUSEHOLD_JOIN_SHARE * n) if n >= 10 else 0
    dup = np.sort(order[:n_dup])
    join, rest = order[n_dup : n_dup + n_join], order[n_dup + n_join :]
    head = rest[rng.integers(0, rest.size, n_join)]
    people = np.concatenate([join, rest])
    person = np.arange(n)
    person[dup] = people[rng.integers(0, people.size, n_dup)]
    home = np.arange(n)
    home[join] = head
    phone_of = np.arange(n)
    shares_phone = rng.random(n_join) < 0.3
    phone_of[join[shares_phone]] = head[shares_phone]

    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_SHARES)[home]
    first = _draw_words(rng, FIRST_NAMES, country)
    same = join[first[join] == first[head]]  # household members have different first names
    sizes = np.array([len(words) for words in FIRST_NAMES])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])[country[same]]
    first[same] = offsets + (first[same] - offsets + 1) % sizes[country[same]]
    last = _draw_words(rng, LAST_NAMES, country)[home]
    region = _draw_words(rng, REGIONS, country)[home]
    street = _draw_words(rng, STREETS, country)[home]
    house = rng.integers(1, 200, n)[home]
    postcode = _postcodes(rng, country).take(pa.array(home[person]))
    calling = pa.array(CALLING_CODES).take(pa.array(country))
    prefix = pc.binary_join_element_wise("+", calling, "")
    phone = pc.binary_join_element_wise(prefix, _digits(rng, n, 3, 100), _digits(rng, n, 6), " ")
    phone = phone.take(pa.array(phone_of[person]))
    domain = rng.integers(0, len(EMAIL_DOMAINS), n)[person]
    age = rng.choice(len(AGE_BANDS), n, p=AGE_SHARES)[person]
    first, last, region, street, house, country = (
        v[person] for v in (first, last, region, street, house, country)
    )

    first_vocab, last_vocab = _vocabulary(FIRST_NAMES), _vocabulary(LAST_NAMES)
    modulus = 10 ** max(5, len(str(cfg.n_customers)) + 1)
    tag = pc.cast(pa.array((global_index[person] * 7919 + cfg.seed) % modulus), pa.string())
    local = pc.binary_join_element_wise(
        _ascii_lower(first_vocab).take(pa.array(first)),
        _ascii_lower(last_vocab).take(pa.array(last)),
        ".",
    )
    email = pc.binary_join_element_wise(
        pc.binary_join_element_wise(local, tag, ""),
        pa.array(EMAIL_DOMAINS).take(pa.array(domain)),
        "@",
    )
    house_str = pc.cast(pa.array(house), pa.string())
    street_str = _vocabulary(STREETS).take(pa.array(street))
    address = pc.if_else(
        pa.array(np.array(NUMBER_FIRST)[country]),
        pc.binary_join_element_wise(house_str, street_str, " "),
        pc.binary_join_element_wise(street_str, house_str, " "),
    )

    # Duplicate records: the same person's details, with casing and whitespace noise.
    dup_mask = np.zeros(n, bool)
    dup_mask[dup] = True
    is_dup, dup_arr = pa.array(dup_mask), pa.array(dup)
    first_idx, last_idx = first.copy(), last.copy()
    first_idx[dup] = len(first_vocab) + np.arange(n_dup)
    last_idx[dup] = len(last_vocab) + np.arange(n_dup)
    first_dict = pa.concat_arrays(
        [first_vocab, _varied(rng, first_vocab.take(pa.array(first[dup])), force=True)]
    )
    last_dict = pa.concat_arrays(
        [last_vocab, _varied(rng, last_vocab.take(pa.array(last[dup])), force=False)]
    )
    email = pc.replace_with_mask(email, is_dup, _varied(rng, email.take(dup_arr), force=False))
    address = pc.replace_with_mask(
        address, is_dup, _varied(rng, address.take(dup_arr), force=False)
    )
    unspaced = np.zeros(n, bool)
    unspaced[dup[rng.random(n_dup) < 0.5]] = True
    unspaced_arr = pa.array(unspaced)
    phone = pc.replace_with_mask(
        phone, unspaced_arr, pc.replace_substring(phone.filter(unspaced_arr), " ", "")
    )

    consent_email = rng.random(n) < CONSENT_EMAIL
    consent_sms = rng.random(n) < np.where(consent_email, *CONSENT_SMS_GIVEN_EMAIL[::-1])
    consent_phone = rng.random(n) < np.where(consent_sms, *CONSENT_PHONE_GIVEN_SMS[::-1])
    signup = pa.array(signup_day + (cfg.start - date(1970, 1, 1)).days, pa.int32())
    customers = pa.table(
        {
            "customer_id": customer_id,
            "signup_date": signup.cast(pa.date32()),
            "country": encoded(country, pa.array(COUNTRIES)),
            "region": encoded(region, _vocabulary(REGIONS)),
            "age_band": encoded(age, pa.array(AGE_BANDS)),
            "first_name": encoded(first_idx, first_dict),
            "last_name": encoded(last_idx, last_dict),
            "email": email,
            "phone": phone,
            "address": address,
            "postcode": postcode,
            "consent_email": pa.array(consent_email),
            "consent_sms": pa.array(consent_sms),
            "consent_phone": pa.array(consent_phone),
        }
    )
    duplicates = pa.table(
        {
            "customer_id": customer_id.take(dup_arr),
            "duplicate_of": customer_id.take(pa.array(person[dup])),
        }
    )
    households = pa.table(
        {
            "customer_id": customer_id,
            "household_key": id_strings("H", offset + home[person] + 1, id_width),
        }
    )
    return customers, duplicates, households
