"""The book: reading the book file, and the column arrays the engine works on.

Range rules live in one place, ``BookArrays.from_book``, checked vectorized so that a host's
100,000-line book is validated without a per-position Python loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from stress_hookspecs import Book, BookColumns, Position
from stress_plugin.core.checks import (
    MAX_FILE_BYTES_DEFAULT,
    MAX_GREEK,
    MAX_MAGNITUDE,
    known_fields,
    parse_yaml,
    read_text,
    required,
    yaml_problem,
)
from stress_plugin.core.errors import NO_VALUE, BookError

PORTFOLIO = "PORTFOLIO"
"""The name the whole book is reported under; no position may use it."""
SYMBOL_RULE = ("1 to 64 characters: ASCII letters, digits and . _ : / ^ + = @ # -, with single "
               "spaces allowed inside (not first or last); no control or non-ASCII characters")
"""What a symbol may be, as the error says it: printable in every log line, table and label."""
MAX_SYMBOL_LEN = 64
_SYMBOL_BYTES = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/^+=@#- ")
_BOOK_FIELDS = {"equity", "var", "positions"}
_POSITION_FIELDS = {"symbol", "quantity", "price", "spread", "multiplier", "var", "delta", "gamma"}
_ROWS = {"quantity": (0, np.nan), "price": (1, np.nan), "spread": (2, np.nan),
         "multiplier": (3, np.nan), "var": (6, np.nan), "delta": (4, 1.0), "gamma": (5, 0.0)}
"""The float fields of a position, read in this order (the first bad one is reported), each
into its row of one (7, n) block (var last: the rows that allow no NaN are one slice), with
the default a None means. A run's range checks are a few reductions over the block."""


def load_book(path: str | Path, max_bytes: int = MAX_FILE_BYTES_DEFAULT) -> Book:
    """Read and validate a book file (YAML, or JSON by its ``.json`` suffix)."""
    return read_book(path, max_bytes)[0]


def read_book(path: str | Path, max_bytes: int = MAX_FILE_BYTES_DEFAULT
              ) -> tuple[Book, BookArrays]:
    """The book file as a ``Book`` and as the validated columns, checked once."""
    path = Path(path)
    text = read_text(path, BookError, max_bytes)
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else parse_yaml(text)
    except json.JSONDecodeError as exc:
        raise BookError(str(path), None, NO_VALUE,
                        f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                        ) from None
    except RecursionError:
        raise BookError(str(path), None, NO_VALUE, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise BookError(str(path), None, NO_VALUE, f"invalid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise BookError(str(path), None, NO_VALUE, yaml_problem(exc)) from None
    book = book_from_mapping(data, str(path))
    return book, BookArrays.from_book(book, str(path))


def book_from_mapping(data: Any, source: str) -> Book:
    """A ``Book`` from the book file's shape; checks fields and types (ranges: ``from_book``)."""
    data = known_fields(BookError, source, data, _BOOK_FIELDS)
    raw_positions = required(BookError, source, data, "positions")
    if not isinstance(raw_positions, Sequence) or isinstance(raw_positions, str):
        raise BookError(source, "positions", type(raw_positions).__name__, "must be a list")
    positions = []
    for i, raw in enumerate(raw_positions):
        prefix = f"positions[{i}]"
        if isinstance(raw, Mapping) and is_symbol(raw.get("symbol")):
            prefix = f"positions[{i}] ({raw['symbol']})"
        raw = known_fields(BookError, source, raw, _POSITION_FIELDS, prefix + ".")
        symbol = required(BookError, source, raw, "symbol", prefix + ".")
        if not isinstance(symbol, str):
            raise BookError(source, f"{prefix}.symbol", symbol, "must be a string")
        fields = {
            name: _typed_number(source, f"{prefix}.{name}", required(
                BookError, source, raw, name, prefix + "."))
            for name in ("quantity", "price", "spread", "multiplier")
        }
        for name in ("var", "delta", "gamma"):
            if raw.get(name) is not None:
                fields[name] = _typed_number(source, f"{prefix}.{name}", raw[name])
        positions.append(Position(symbol=symbol, **fields))
    equity = _typed_number(source, "equity", required(BookError, source, data, "equity"))
    var = data.get("var")
    return Book(
        equity=equity,
        positions=tuple(positions),
        var=None if var is None else _typed_number(source, "var", var),
    )


def _typed_number(source: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BookError(source, field, value, "must be a number")
    return float(value)


class BookArrays(NamedTuple):
    """A book as one float64 column per field (``var`` is NaN where not given)."""

    symbols: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    spread: np.ndarray
    multiplier: np.ndarray
    var: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    equity: float
    book_var: float | None

    def take(self, index: np.ndarray) -> BookArrays:
        """The positions at ``index``, in that order."""
        return BookArrays(self.symbols[index], self.quantity[index], self.price[index],
                          self.spread[index], self.multiplier[index], self.var[index],
                          self.delta[index], self.gamma[index], self.equity, self.book_var)

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.symbols, self.quantity, self.price, self.spread, self.multiplier,
                self.var, self.delta, self.gamma)

    @classmethod
    def from_book(cls, book: Book | BookColumns, source: str, *, check: bool = True,
                  names: NameMemo | None = None) -> BookArrays:
        """Columns of ``book`` (``Position``s or ``BookColumns``); raises ``BookError`` naming
        the first bad symbol and field (without ``check``, only for what cannot be a column:
        see ``problems``). ``names``, kept by the caller, skips the name rules when the
        symbols are those of the last book it passed."""
        if isinstance(book, BookColumns):
            return cls.from_columns(book, source, check=check, names=names)
        _check_scalar(source, "equity", book.equity, positive=True)
        if book.var is not None:
            _check_scalar(source, "var", book.var, positive=True)
        positions = book.positions
        if not positions:
            raise BookError(source, "positions", [], "must hold at least one position")

        def column(name: str, default: float) -> np.ndarray:
            get = attrgetter(name)
            try:  # straight into the array (a None becomes NaN), the list only if not
                array = np.fromiter(map(get, positions), np.float64, len(positions))
            except (TypeError, ValueError):
                pass  # something that is no number: look closer
            else:  # a NaN is right unless a None in it means a default
                if np.isnan(default) or not np.isnan(array).any():
                    return array
            values = list(map(get, positions))
            try:
                array = np.array(values, dtype=np.float64)  # None becomes NaN
            except (TypeError, ValueError):
                bad = next(i for i, v in enumerate(values) if not _is_number(v))
                raise BookError(source, _where(positions, bad, name), values[bad],
                                "must be a number") from None
            if not np.isnan(default):  # None means the default; a NaN given stays (and fails)
                for i in np.flatnonzero(np.isnan(array)).tolist():
                    if values[i] is None:
                        array[i] = default
            return array

        listed = list(map(attrgetter("symbol"), positions))
        block = np.empty((len(_ROWS), len(positions)))
        for name, (row, default) in _ROWS.items():
            block[row] = column(name, default)
        symbols, known = _symbol_column(listed, names)
        arrays = cls._of(symbols, block, book.equity, book.var)
        if check and not arrays._valid(block, listed, names, known):
            arrays._check(positions, source)
        return arrays

    @classmethod
    def from_columns(cls, book: BookColumns, source: str, *, check: bool = True,
                     names: NameMemo | None = None) -> BookArrays:
        """Columns of a ``BookColumns`` (copied: a host may keep changing its own arrays),
        checked by the same rules as a book of ``Position``s."""
        _check_scalar(source, "equity", book.equity, positive=True)
        if book.var is not None:
            _check_scalar(source, "var", book.var, positive=True)
        given = book.symbols
        listed = given.tolist() if hasattr(given, "tolist") else list(given)
        symbols, known = _symbol_column(listed, names)
        n = len(symbols)
        if symbols.ndim != 1 or not n:
            raise BookError(source, "symbols", n, "must hold at least one symbol, in one column")
        block = np.empty((len(_ROWS), n))
        for field, (row, default) in _ROWS.items():
            name = "position_var" if field == "var" else field  # BookColumns' own field name
            values = getattr(book, name)
            if values is None:
                block[row] = default
                continue
            try:  # no copy yet for a float64 array: the one copy is into the block
                array = np.asarray(values, dtype=np.float64)  # a None becomes NaN
            except (TypeError, ValueError):
                bad = next(i for i, v in enumerate(values) if not _is_number(v))
                raise BookError(source, _column_where(symbols, bad, name), values[bad],
                                "must be a number") from None
            if array.shape != (n,):
                raise BookError(source, name, f"{array.size} values",
                                f"must hold one value per symbol ({n})")
            block[row] = array
        arrays = cls._of(symbols, block, book.equity, book.var)
        if check and not arrays._valid(block, listed, names, known):
            arrays._check((), source)
        return arrays

    @classmethod
    def _of(cls, symbols: np.ndarray, block: np.ndarray, equity: float, book_var: float | None
            ) -> BookArrays:
        """The columns as rows of ``block`` (``_ROWS``' order), no copies."""
        quantity, price, spread, multiplier, delta, gamma, var = block
        return cls(symbols, quantity, price, spread, multiplier, var, delta, gamma,
                   float(equity), None if book_var is None else float(book_var))

    def _valid(self, block: np.ndarray, listed: list[str], names: NameMemo | None,
               known: bool) -> bool:
        """Whether every rule of ``problems`` holds, in a few whole-block reductions (a NaN
        or an infinity fails a bound); False only sends the book to ``problems``, which names
        what is wrong. ``known``: the names are the memo's, which passed already."""
        n = block.shape[1]
        q0, p0, h0, m0, d0, c0 = block[:6].min(axis=1).tolist()
        q1, p1, h1, m1, d1, c1 = block[:6].max(axis=1).tolist()
        big, greek = MAX_MAGNITUDE, MAX_GREEK
        if not (-big <= q0 and q1 <= big and p0 > 0 and p1 <= big and h0 >= 0 and h1 <= big
                and m0 > 0 and m1 <= big and -greek <= d0 and d1 <= greek
                and -greek <= c0 and c1 <= greek and np.count_nonzero(block[0]) == n):
            return False
        var = block[6]  # NaN (no VaR) is allowed; fmin and fmax skip it
        low = float(np.fmin.reduce(var))
        if not math.isnan(low) and not (low > 0 and float(np.fmax.reduce(var)) <= big):
            return False
        return known or _names_valid(listed, self.symbols, names)

    def _check(self, positions: Sequence[Position], source: str) -> None:
        for problem in self.problems(positions, source):
            raise problem

    def problems(self, positions: Sequence[Position], source: str,
                 index: Sequence[int] | None = None) -> Iterator[BookError]:
        """Every range and naming problem, rule by rule (``_check`` raises the first);
        ``index`` maps a position to its place in the file when some were left out. A book
        of ``Position``s names ``positions[i] (SYMBOL).field``; ``BookColumns`` (``positions``
        empty) name ``field[i] (SYMBOL)``."""
        names = self.symbols.tolist()
        at = range(len(names)) if index is None else index
        columns = not positions

        def where(i: int, field: str) -> str:
            if columns:
                return _column_where(self.symbols, i, "symbols" if field == "symbol" else
                                     "position_var" if field == "var" else field)
            symbol = names[i]
            return f"positions[{at[i]}] ({symbol}).{field}" if is_symbol(symbol) else \
                f"positions[{at[i]}].{field}"

        def named_at(i: int) -> str:  # a symbol's own problem: the symbol is the value
            return where(i, "symbol") if columns else f"positions[{at[i]}].symbol"

        try:  # one regex over all names (C); the Python loop only finds the culprit
            named = _all_symbols(names)
        except TypeError:  # not a str
            named = False
        if not named:
            for i, sym in enumerate(names):
                if not is_symbol(sym):
                    yield BookError(source, named_at(i), sym,
                                    f"must be {SYMBOL_RULE}")
        unique = set(names)
        if len(unique) != len(names):
            seen: set[str] = set()
            for i, sym in enumerate(names):
                if sym in seen:
                    yield BookError(source, named_at(i), sym,
                                    "duplicate symbol")
                seen.add(sym)
        if PORTFOLIO in unique:
            for i in (i for i, sym in enumerate(names) if sym == PORTFOLIO):
                yield BookError(source, named_at(i), PORTFOLIO,
                                "is reserved for the whole book")
        with np.errstate(invalid="ignore"):
            rules = (
                ("quantity", self.quantity, np.isfinite(self.quantity) & (self.quantity != 0),
                 "must be a finite number other than 0"),
                ("price", self.price, np.isfinite(self.price) & (self.price > 0),
                 "must be a finite number > 0"),
                ("spread", self.spread, np.isfinite(self.spread) & (self.spread >= 0),
                 "must be a finite number >= 0"),
                ("multiplier", self.multiplier,
                 np.isfinite(self.multiplier) & (self.multiplier > 0),
                 "must be a finite number > 0"),
                ("var", self.var, np.isnan(self.var) | (np.isfinite(self.var) & (self.var > 0)),
                 "must be a finite number > 0"),
                ("delta", self.delta, np.isfinite(self.delta), "must be a finite number"),
                ("gamma", self.gamma, np.isfinite(self.gamma), "must be a finite number"),
            )
            big = f"must be at most {MAX_MAGNITUDE:g}"
            greek = f"must be at most {MAX_GREEK:g} in absolute value"
            bounds = (  # so that no product of the model can overflow (model.md)
                ("quantity", self.quantity, np.abs(self.quantity) <= MAX_MAGNITUDE,
                 big + " in absolute value"),
                ("price", self.price, self.price <= MAX_MAGNITUDE, big),
                ("spread", self.spread, self.spread <= MAX_MAGNITUDE, big),
                ("multiplier", self.multiplier, self.multiplier <= MAX_MAGNITUDE, big),
                ("var", self.var, ~(self.var > MAX_MAGNITUDE), big),
                ("delta", self.delta, np.abs(self.delta) <= MAX_GREEK, greek),
                ("gamma", self.gamma, np.abs(self.gamma) <= MAX_GREEK, greek),
            )
        for name, values, ok, problem in (*rules, *bounds):
            if not ok.all():
                for bad in np.flatnonzero(~ok).tolist():
                    yield BookError(source, where(bad, name), float(values[bad]), problem)


class NameMemo:
    """The symbols of the last book whose names passed every name rule, kept by a caller
    that validates the same book run after run (a runner): a list comparison (pointer
    equality for the host's own strings) instead of the name rules, 1,000,000 names in
    a few ms. The same names get the same read-only column back, so what keeps the last
    run's names (the store's symbol list) knows them by identity. Only names that passed
    are kept, and a caller owns it (the core keeps no state)."""

    __slots__ = ("column", "names")

    def __init__(self) -> None:
        self.names: list[str] | None = None
        self.column: np.ndarray | None = None

    def column_of(self, listed: list[str]) -> np.ndarray | None:
        """The column of ``listed`` when they are the names kept, else None."""
        return self.column if self.names == listed else None

    def keep(self, listed: list[str], column: np.ndarray) -> None:
        column.flags.writeable = False  # shared by the runs that follow
        self.names, self.column = listed, column


def _symbol_column(listed: list[str], memo: NameMemo | None) -> tuple[np.ndarray, bool]:
    """The symbols as a column, and whether they are the memo's names (passed already: its
    column is given back)."""
    known = memo.column_of(listed) if memo is not None else None
    return (np.array(listed, dtype=object), False) if known is None else (known, True)


def _names_valid(listed: list[str], column: np.ndarray, memo: NameMemo | None) -> bool:
    """Every name a symbol, none twice, none the reserved one (``problems`` names which);
    names that pass are kept in ``memo`` with their ``column``."""
    try:
        ok = _all_symbols(listed)
    except TypeError:  # not a str
        return False
    if ok:
        ok = _unique(listed)
    if ok and memo is not None:
        memo.keep(listed, column)
    return ok


_HASHED_FROM = 400_000
"""Names from which uniqueness is checked by sorted hashes: a set of 1,000,000 strings costs
twice as much, mostly in cache misses over its table (below about 400,000, the set wins)."""


def _unique(listed: list[str]) -> bool:
    """No name twice and none ``PORTFOLIO``. A long list by its sorted hashes (equal names
    have equal hashes, so distinct hashes are distinct names); any repeated hash, or the
    reserved one's, is settled by the set."""
    if len(listed) >= _HASHED_FROM:
        hashes = np.fromiter(map(hash, listed), np.int64, len(listed))
        hashes.sort()
        reserved = int(hashes.searchsorted(hash(PORTFOLIO)))
        if not ((hashes[1:] == hashes[:-1]).any() or
                (reserved < len(hashes) and hashes[reserved] == hash(PORTFOLIO))):
            return True
    unique = set(listed)
    return len(unique) == len(listed) and PORTFOLIO not in unique


def is_symbol(value: Any) -> bool:
    """Whether ``value`` is a symbol by ``SYMBOL_RULE``."""
    return isinstance(value, str) and _all_symbols([value])


def _all_symbols(names: list[str]) -> bool:
    """``SYMBOL_RULE`` for every name at once, in C loops (100,000 names: a few ms): one
    joined text whose bytes, less the allowed ones, must be just the separators; no empty
    name (two separators together), none too long, spaces only single and inside."""
    if not names:
        return False
    joined = "\n".join(names)  # a name that is no str raises TypeError here
    if not joined or not joined.isascii() or joined.count("\n") != len(names) - 1:
        return False
    data = joined.encode("ascii")
    if data.translate(None, _SYMBOL_BYTES) != b"\n" * (len(names) - 1):
        return False
    if len(data) > MAX_SYMBOL_LEN:  # the longest name (ASCII: a character is a byte)
        if len(names) < 1_000:  # a pass over few names costs less than numpy's calls
            widest = max(map(len, names))
        else:  # the widest gap between separators
            ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
            widest = int(np.diff(ends, prepend=-1, append=len(data)).max()) - 1
        if widest > MAX_SYMBOL_LEN:
            return False
    if "\n\n" in joined or joined[0] == "\n" or joined[-1] == "\n":
        return False
    return " " not in joined or not (" \n" in joined or "\n " in joined or "  " in joined
                                     or joined[0] == " " or joined[-1] == " ")


def _where(positions: Sequence[Position], index: int, field: str) -> str:
    symbol = positions[index].symbol
    return f"positions[{index}] ({symbol}).{field}" if is_symbol(symbol) else \
        f"positions[{index}].{field}"


def _column_where(symbols: np.ndarray, index: int, field: str) -> str:
    symbol = symbols[index]
    return f"{field}[{index}] ({symbol})" if is_symbol(symbol) else f"{field}[{index}]"


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _check_scalar(source: str, field: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise BookError(source, field, value, "must be a finite number")
    if positive and value <= 0:
        raise BookError(source, field, value, "must be > 0")
    if value > MAX_MAGNITUDE:
        raise BookError(source, field, value, f"must be at most {MAX_MAGNITUDE:g}")
