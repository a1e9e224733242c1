"""Raw files as DuckDB relations: CSV and Parquet (gzip-compressed or not), a named member of a zip
or tar archive, and whitespace-aligned or fixed-width text described by a ``format`` object.

DuckDB reads CSV, gzip and Parquet itself. An archive member is copied to a work folder first
(DuckDB cannot read inside a zip). Text formats are read as lines and cut into fields in SQL, so a
file with a thousand columns needs no hand-written ``substr`` per column. Errors raise
``ReadError`` carrying the config key they concern (``member``, ``format``); ``features.sources``
adds the dataset file, table and source index.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from features.sql import parquet_relation, quote_ident, sql_literal

#: File-name endings read as tar archives (any compression tarfile knows).
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZIP_MAGIC = b"PK\x03\x04"
#: Bytes of an archive member copied for a dry run (``check-dataset``): enough for the first rows.
SAMPLE_BYTES = 16 << 20


class ReadError(ValueError):
    """A raw file cannot be read as configured; ``key`` is the source's config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class _TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    names: list[str] | None = Field(
        default=None, description="column names (default: read from the header line)"
    )
    header: bool = Field(default=True, description="the first non-blank line holds the names")
    skip: int = Field(default=0, ge=0, description="lines to skip before the header / data")

    @model_validator(mode="after")
    def _names_or_header(self) -> _TextFormat:
        if not self.header and not self.names:
            raise ValueError("a text format without a header line needs 'names'")
        if self.names and len(set(self.names)) != len(self.names):
            raise ValueError(f"'names' repeats a name: {self.names}")
        return self


class FixedWidth(_TextFormat):
    """Columns at fixed character positions: ``widths`` in order; the last runs to the line end."""

    kind: Literal["fixed_width"]
    widths: list[PositiveInt] = Field(min_length=1, description="characters per column, in order")

    @model_validator(mode="after")
    def _names_match_widths(self) -> FixedWidth:
        if self.names and len(self.names) != len(self.widths):
            raise ValueError(f"'names' has {len(self.names)} names for {len(self.widths)} 'widths'")
        return self


class Whitespace(_TextFormat):
    """Fields separated by runs of spaces or tabs; a line with another number of fields than the
    names is quarantined (a blank cell would shift the fields after it: use ``fixed_width``)."""

    kind: Literal["whitespace"]


TextFormat = Annotated[FixedWidth | Whitespace, Field(discriminator="kind")]
SourceFormat = Literal["auto", "csv", "parquet"] | TextFormat

#: The reader column holding a whitespace line's field count (checked, never passed through).
FIELDS = "__fields"


def archive_kind(path: Path, member: str | None) -> Literal["zip", "tar"] | None:
    """``zip`` or ``tar`` when ``path`` is an archive (by its name or its first bytes)."""
    name = path.name.lower()
    if name.endswith(".zip") or _starts_with(path, _ZIP_MAGIC):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if member is not None:
        if tarfile.is_tarfile(path):
            return "tar"
        raise ReadError("member", f"{path.name} is not a zip or tar archive")
    return None


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(magic)) == magic


def _skipped(name: str) -> bool:
    """Archive entries that are not data: folders, macOS resource forks, hidden files."""
    parts = PurePosixPath(name).parts
    return (
        name.endswith("/")
        or not parts
        or parts[0] == "__MACOSX"
        or any(p.startswith(".") for p in parts)
    )


def archive_members(path: Path, kind: Literal["zip", "tar"]) -> list[str]:
    """The data files in an archive, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            return [
                i.filename for i in zf.infolist() if not i.is_dir() and not _skipped(i.filename)
            ]
    with tarfile.open(path, "r:*") as tf:
        return [m.name for m in tf.getmembers() if m.isfile() and not _skipped(m.name)]


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate most like ``name`` (case-insensitive, difflib), or None when none is close."""
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.5)
    return by_lower[found[0]] if found else None


def listed(names: list[str], limit: int = 30) -> str:
    """Names for a one-line message, at most ``limit`` of them."""
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def pick_member(path: Path, kind: Literal["zip", "tar"], member: str | None) -> str:
    """The archive member to read: ``member`` (its full name, or its file name when unique), or
    the archive's only data file when ``member`` is not set."""
    members = archive_members(path, kind)
    if member is None:
        if len(members) == 1:
            return members[0]
        raise ReadError(
            "member",
            f"{path.name} holds {len(members)} files; name one with 'member' "
            f"(members: {listed(members)})",
        )
    if member in members:
        return member
    same_name = [m for m in members if PurePosixPath(m).name == member]
    if len(same_name) == 1:
        return same_name[0]
    near = closest(member, members) or closest(member, [PurePosixPath(m).name for m in members])
    hint = f"closest {json.dumps(near)}" if near else "no close match"
    raise ReadError(
        "member",
        f"no member {json.dumps(member)} in {path.name} ({hint}; members: {listed(members)})",
    )


def extract_member(
    path: Path, kind: Literal["zip", "tar"], member: str, dest: Path, max_bytes: int | None = None
) -> Path:
    """Copy an archive member into ``dest`` (keeping its file name, so its type still shows);
    with ``max_bytes``, only that many bytes of an uncompressed text member, cut after a line."""
    target = dest / PurePosixPath(member).name
    dest.mkdir(parents=True, exist_ok=True)
    limit = max_bytes if max_bytes and _is_plain_text(member) else None
    if kind == "zip":
        with zipfile.ZipFile(path) as zf, zf.open(member) as src, target.open("wb") as out:
            _copy(src, out, limit)
    else:
        with tarfile.open(path, "r:*") as tf:
            src_file = tf.extractfile(member)
            if src_file is None:
                raise ReadError("member", f"{member!r} in {path.name} is not a regular file")
            with src_file, target.open("wb") as out:
                _copy(src_file, out, limit)
    return target


def _is_plain_text(name: str) -> bool:
    return not name.lower().endswith((".parquet", ".gz", ".zst", ".bz2", ".xz", ".zip"))


def _copy(src: Any, out: Any, limit: int | None) -> None:
    if limit is None:
        shutil.copyfileobj(src, out, 1 << 20)
        return
    data = src.read(limit)
    if len(data) == limit:  # cut: keep whole lines only
        data = data[: data.rfind(b"\n") + 1]
    out.write(data)


def readable_path(
    path: Path, member: str | None, workdir: Path, max_bytes: int | None = None
) -> tuple[Path, str | None]:
    """The file DuckDB reads for a source, and the archive member it is (None for a plain file)."""
    try:
        kind = archive_kind(path, member)
        if kind is None:
            return path, None
        chosen = pick_member(path, kind, member)
        # one folder per archive read: two members of the same name never overwrite each other
        dest = workdir / f"{len(list(workdir.glob('*')))}"
        return extract_member(path, kind, chosen, dest, max_bytes), chosen
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ReadError("path", f"{path.name} is not a readable archive: {exc}") from exc


def relation(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: SourceFormat,
    read_options: dict[str, Any],
    limit: int | None = None,
) -> str:
    """SQL for the rows of a raw file: every column as text (Parquet keeps its types)."""
    if isinstance(fmt, FixedWidth | Whitespace):
        return _text_relation(con, path, fmt, read_options, limit)
    name = path.name.lower()
    kind = fmt if fmt != "auto" else ("parquet" if name.endswith(".parquet") else "csv")
    if kind == "parquet":
        rel = parquet_relation(path)
    else:
        opts = {"header": True, "all_varchar": True, **read_options}
        if "compression" not in read_options and _starts_with(path, b"\x1f\x8b"):
            opts["compression"] = "gzip"  # gzip by its content, whatever the file is called
        args = ", ".join(f"{k} = {sql_literal(v)}" for k, v in opts.items())
        rel = f"read_csv({sql_literal(str(path))}, {args})"
    return rel if limit is None else f"(SELECT * FROM {rel} LIMIT {int(limit)})"


def _lines(path: Path, skip: int, read_options: dict[str, Any]) -> str:
    """Every line of a text file as ``__line`` (a blank line is NULL); NUL never occurs in text."""
    opts = {k: v for k, v in read_options.items() if k in ("compression", "encoding")}
    if "compression" not in opts and _starts_with(path, b"\x1f\x8b"):
        opts["compression"] = "gzip"
    extra = "".join(f", {k} = {sql_literal(v)}" for k, v in opts.items())
    return (
        f"read_csv({sql_literal(str(path))}, header = false, columns = {{'__line': 'VARCHAR'}}, "
        f"delim = chr(0), quote = '', escape = '', auto_detect = false, skip = {skip}{extra})"
    )


_BLANK = "(__line IS NULL OR trim(__line) = '')"


def _text_relation(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: FixedWidth | Whitespace,
    read_options: dict[str, Any],
    limit: int | None,
) -> str:
    skip, header_names = fmt.skip, None
    if fmt.header:
        row = con.execute(
            f"SELECT n, __line FROM (SELECT row_number() OVER () AS n, __line "
            f"FROM {_lines(path, fmt.skip, read_options)}) WHERE NOT {_BLANK} LIMIT 1"
        ).fetchone()
        if row is None:
            raise ReadError("format", f"{path.name} has no header line")
        skip, header_names = fmt.skip + int(row[0]), _split_header(str(row[1]), fmt)
    names = _unique(fmt.names or header_names or [])
    lines = f"(SELECT __line FROM {_lines(path, skip, read_options)} WHERE NOT {_BLANK})"
    if isinstance(fmt, FixedWidth):
        fields, start = [], 1
        for i, (name, width) in enumerate(zip(names, fmt.widths, strict=True)):
            last = i == len(fmt.widths) - 1
            cut = f"substr(__line, {start})" if last else f"substr(__line, {start}, {width})"
            fields.append(f"NULLIF(trim({cut}), '') AS {quote_ident(name)}")
            start += width
        sql = f"SELECT {', '.join(fields)} FROM {lines}"
    else:
        fields = [f"__f[{i + 1}] AS {quote_ident(name)}" for i, name in enumerate(names)]
        split = r"string_split_regex(trim(__line), '\s+')"
        sql = (
            f"SELECT {', '.join(fields)}, len(__f) AS {FIELDS} "
            f"FROM (SELECT {split} AS __f FROM {lines})"
        )
    return f"({sql}{'' if limit is None else f' LIMIT {int(limit)}'})"


def _split_header(line: str, fmt: FixedWidth | Whitespace) -> list[str]:
    if isinstance(fmt, Whitespace):
        return line.split()
    names, start = [], 0
    for i, width in enumerate(fmt.widths):
        last = i == len(fmt.widths) - 1
        names.append(line[start:] if last else line[start : start + width])
        start += width
    return [n.strip() or f"column_{i + 1}" for i, n in enumerate(names)]


def _unique(names: list[str]) -> list[str]:
    """Names made unique (``x``, ``x_2``) so that each becomes a column."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def error_line(exc: BaseException) -> str:
    """An exception as one line: a DuckDB message without its SQL excerpt, lines joined."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, duckdb.Error):
        text = re.split(r"\n\s*\n", text, maxsplit=1)[0]  # drop "LINE 1: <the query>" & hints
    return " ".join(text.split())
