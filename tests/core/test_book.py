"""Book files and host books: every bad input names the file, symbol and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import book, position
from stress_hookspecs import Book, BookColumns, Position, hookimpl
from stress_plugin import load_book
from stress_plugin.core import book as book_module
from stress_plugin.core.book import BookArrays, NameMemo
from stress_plugin.core.errors import BookError


def write(tmp_path: Path, data, name="book.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_yaml_and_json_books_load_the_same(tmp_path: Path):
    data = book(position(var=3000), position("MNQ", -2, 21000, 0.5, 2, delta=1, gamma=0))
    a = load_book(write(tmp_path, data))
    b = load_book(write(tmp_path, data, "book.json"))
    assert a == b
    assert a.positions[0] == Position("MES", 5, 6000.0, 0.25, 5, var=3000)


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"quantity": 0}, "positions[0] (MES).quantity", "other than 0"),
    ({"price": -1}, "positions[0] (MES).price", "> 0"),
    ({"price": 0}, "positions[0] (MES).price", "> 0"),
    ({"spread": -0.25}, "positions[0] (MES).spread", ">= 0"),
    ({"multiplier": 0}, "positions[0] (MES).multiplier", "> 0"),
    ({"var": 0}, "positions[0] (MES).var", "> 0"),
    ({"gamma": float("inf")}, "positions[0] (MES).gamma", "finite"),
    ({"delta": float("nan")}, "positions[0] (MES).delta", "finite"),
    ({"price": "6000"}, "positions[0] (MES).price", "must be a number"),
    ({"strike": 5900}, "positions[0] (MES).strike", "unknown field"),
])
def test_bad_position_fields(tmp_path: Path, change, field, problem):
    path = write(tmp_path, book({**position(), **change}), "book.json")
    with pytest.raises(BookError) as err:
        load_book(path)
    assert f"{path}: {field}" in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize(("data", "field", "problem"), [
    (book(position(), equity=0), "equity", "> 0"),
    (book(position(), equity=float("nan")), "equity", "finite"),
    (book(position(), var=-5), "var", "> 0"),
    (book(), "positions", "at least one"),
    (book(position(), position()), "positions[1].symbol", "duplicate symbol"),
    (book(position("PORTFOLIO")), "positions[0].symbol", "reserved"),
    ({"positions": [position()]}, "equity", "is required"),
    ({"equity": 1, "positions": [{"symbol": "X"}]}, "positions[0] (X).quantity", "is required"),
])
def test_bad_books(tmp_path: Path, data, field, problem):
    path = write(tmp_path, data, "book.json")
    with pytest.raises(BookError) as err:
        load_book(path)
    assert f"{path}: {field}" in str(err.value) and problem in str(err.value)


def test_host_book_objects_are_checked_too():
    bad = Book(equity=1e6, positions=(Position("MES", 1, float("nan"), 0.25, 5),))
    with pytest.raises(BookError, match=r"host: positions\[0\] \(MES\)\.price"):
        BookArrays.from_book(bad, "host")


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(BookError, match="cannot read"):
        load_book(tmp_path / "nope.yaml")


def test_host_positions_with_none_take_the_defaults_and_nan_is_named():
    positions = (Position("A", 1, 100.0, 0.1, 5, var=None, delta=None, gamma=None),
                 Position("B", -2, 50.0, 0.1, 5, var=10.0))
    arrays = BookArrays.from_book(Book(equity=1e6, positions=positions), "host")
    assert arrays.delta.tolist() == [1.0, 1.0] and arrays.gamma.tolist() == [0.0, 0.0]
    assert np.isnan(arrays.var[0]) and arrays.var[1] == 10.0
    bad = (positions[0], Position("B", -2, 50.0, 0.1, 5, delta=float("nan")))
    with pytest.raises(BookError, match=r"host: positions\[1\] \(B\)\.delta: must be a finite"):
        BookArrays.from_book(Book(equity=1e6, positions=bad), "host")


# -- BookColumns: one array per field -----------------------------------------------------------


def _columns(**change) -> BookColumns:
    fields = dict(equity=1e6, var=5e4, symbols=["A", "B", "C"], quantity=[1.0, -2.0, 3.0],
                  price=np.array([100.0, 50.0, 20.0]), spread=[0.1, 0.1, 0.05],
                  multiplier=[5.0, 5.0, 50.0], position_var=[None, 10.0, float("nan")],
                  delta=[1.0, 0.4, 1.0], gamma=[0.0, 0.002, 0.0])
    return BookColumns(**{**fields, **change})


def test_columns_give_the_same_arrays_as_the_same_positions():
    columns = _columns()
    by_columns = BookArrays.from_book(columns, "host")
    by_positions = BookArrays.from_book(columns.to_book(), "host")
    for name in ("quantity", "price", "spread", "multiplier", "var", "delta", "gamma"):
        np.testing.assert_array_equal(getattr(by_columns, name), getattr(by_positions, name))
    assert by_columns.symbols.tolist() == ["A", "B", "C"]
    assert (by_columns.equity, by_columns.book_var) == (1e6, 5e4)
    assert columns.to_book().positions[0].var is None and len(columns) == 3


def test_columns_are_copied_so_the_host_may_keep_changing_its_own():
    price = np.array([100.0, 50.0, 20.0])
    arrays = BookArrays.from_book(_columns(price=price), "host")
    price[0] = 1.0
    assert arrays.price[0] == 100.0


def test_missing_greeks_and_vars_take_the_defaults():
    arrays = BookArrays.from_book(_columns(position_var=None, delta=None, gamma=None), "host")
    assert arrays.delta.tolist() == [1.0] * 3 and arrays.gamma.tolist() == [0.0] * 3
    assert np.isnan(arrays.var).all()


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"price": [100.0, -1.0, 20.0]}, r"price\[1\] \(B\)", "must be a finite number > 0"),
    ({"quantity": [1.0, 0.0, 3.0]}, r"quantity\[1\] \(B\)", "other than 0"),
    ({"position_var": [1.0, -1.0, 1.0]}, r"position_var\[1\] \(B\)", "> 0"),
    ({"delta": [1.0, 1.0, 1e9]}, r"delta\[2\] \(C\)", "at most"),
    ({"symbols": ["A", "B", "A"]}, r"symbols\[2\] \(A\)", "duplicate symbol"),
    ({"symbols": ["A", "B", "bad\nname"]}, r"symbols\[2\]", "must be 1 to 64"),
    ({"symbols": ["A", "PORTFOLIO", "C"]}, r"symbols\[1\] \(PORTFOLIO\)", "reserved"),
    ({"spread": [0.1, 0.1]}, "spread", "one value per symbol"),
    ({"gamma": [0.0, "x", 0.0]}, r"gamma\[1\] \(B\)", "must be a number"),
    ({"symbols": []}, "symbols", "at least one symbol"),
    ({"equity": -1.0}, "equity", "must be > 0"),
])
def test_bad_columns_are_named_by_field_and_row(change, field, problem):
    with pytest.raises(BookError, match=rf"host: {field}: .*{problem}"):
        BookArrays.from_book(_columns(**change), "host")


def test_a_host_may_answer_stress_book_with_columns(make_runner):
    columns = _columns()

    class Host:
        @hookimpl
        def stress_book(self):
            return columns

    by_columns = make_runner(Host()).run_once()
    by_positions = make_runner().run_once(book=columns.to_book())
    assert by_columns.status == "passed" and by_columns.book_source == "plugin extra0"
    assert by_columns.symbols.to_dict() == by_positions.symbols.to_dict()
    assert by_columns.portfolio == by_positions.portfolio


# -- the fast check: a few reductions over the whole book, ``problems`` when they fail ----------


_BAD_VALUES = {  # field -> values that break one of its rules, and boundary values that do not
    "quantity": ([0.0, -0.0, np.nan, np.inf, -np.inf, 1e12 * 1.0000001, -1e13],
                 [1e12, -1e12, 5e-324, -5e-324]),
    "price": ([0.0, -1.0, np.nan, np.inf, 2e12], [1e12, 5e-324]),
    "spread": ([-5e-324, -1.0, np.nan, np.inf, 2e12], [0.0, -0.0, 1e12]),
    "multiplier": ([0.0, -2.0, np.nan, np.inf, 2e12], [1e12, 5e-324]),
    "var": ([0.0, -1.0, np.inf, -np.inf, 2e12], [np.nan, None, 1e12, 5e-324]),
    "delta": ([np.nan, np.inf, -np.inf, 1000.0000001, -1e4], [1e3, -1e3, 0.0]),
    "gamma": ([np.nan, np.inf, -np.inf, 1000.0000001, -1e4], [1e3, -1e3, -0.0]),
}


def _first_problem(arrays: BookArrays, positions, source="host"):
    return next(iter(arrays.problems(positions, source)), None)


@pytest.mark.parametrize("field", sorted(_BAD_VALUES))
def test_the_fast_check_agrees_with_the_rules_at_every_bound(field):
    """Every value on either side of a bound, in positions and in columns: raised exactly when
    a rule says so, with the rule's own first message."""
    rng = np.random.default_rng(7)
    bad, good = _BAD_VALUES[field]
    for value, ok in [(v, False) for v in bad] + [(v, True) for v in good]:
        n = int(rng.integers(1, 6))
        at = int(rng.integers(0, n))
        positions = tuple(Position(f"S{i}", 1.0 + i, 10.0, 0.1, 2.0, var=5.0, delta=0.5,
                                   gamma=0.01) for i in range(n))
        positions = tuple(Position(**{**p.to_dict(), field: value}) if i == at else p
                          for i, p in enumerate(positions))
        books = [Book(equity=1e6, positions=positions), BookColumns(
            equity=1e6, symbols=[p.symbol for p in positions],
            **{("position_var" if f == "var" else f): [getattr(p, f) for p in positions]
               for f in _BAD_VALUES})]
        for host_book in books:
            unchecked = BookArrays.from_book(host_book, "host", check=False)
            expected = _first_problem(
                unchecked, () if isinstance(host_book, BookColumns) else positions)
            assert (expected is None) == ok, (field, value, expected)
            if ok:
                BookArrays.from_book(host_book, "host")
            else:
                with pytest.raises(BookError) as raised:
                    BookArrays.from_book(host_book, "host")
                assert str(raised.value) == str(expected)


def test_the_first_field_that_is_no_number_is_named_in_file_order():
    bad = Position("A", 1.0, 10.0, 0.1, 2.0, var="x", delta="y")  # type: ignore[arg-type]
    with pytest.raises(BookError, match=r"positions\[0\] \(A\)\.var: .*must be a number"):
        BookArrays.from_book(Book(equity=1e6, positions=(bad,)), "host")
    with pytest.raises(BookError, match=r"position_var\[1\] \(B\): .*must be a number"):
        BookArrays.from_book(_columns(position_var=[1.0, "x", 1.0], delta=[1.0, "y", 1.0]),
                             "host")


def test_a_name_memo_skips_only_names_that_passed():
    memo = NameMemo()
    good = _columns()
    first = BookArrays.from_book(good, "host", names=memo)
    assert memo.names == ["A", "B", "C"]
    again = BookArrays.from_book(good.to_book(), "host", names=memo)  # the same names again
    assert again.symbols is first.symbols  # one column: the store knows it by identity
    assert not again.symbols.flags.writeable  # shared by the runs that follow: read-only
    for symbols, problem in ((["A", "B", "A"], "duplicate symbol"),
                             (["A", "PORTFOLIO", "C"], "reserved"),
                             (["A", "B", "x" * 65], "must be 1 to 64")):
        for _ in range(2):  # a bad book is never remembered: it fails every time
            with pytest.raises(BookError, match=problem):
                BookArrays.from_book(_columns(symbols=symbols), "host", names=memo)
        assert memo.names == ["A", "B", "C"]
    with pytest.raises(BookError, match=r"price\[1\] \(B\)"):  # numbers are always checked
        BookArrays.from_book(_columns(price=[1.0, -1.0, 1.0]), "host", names=memo)
    other = BookArrays.from_book(_columns(symbols=["A", "B", "D"]), "host", names=memo)
    assert memo.names == ["A", "B", "D"] == other.symbols.tolist()
    assert other.symbols is not first.symbols and first.symbols.tolist() == ["A", "B", "C"]


@pytest.mark.parametrize("hashed_from", [1, 10**9])
def test_duplicates_and_the_reserved_name_are_found_by_hashes_as_by_the_set(monkeypatch,
                                                                           hashed_from):
    """A long book checks uniqueness by sorted hashes, settled by the set on any repeat."""
    monkeypatch.setattr(book_module, "_HASHED_FROM", hashed_from)
    BookArrays.from_book(_columns(symbols=["A", "B", "C"]), "host")
    for symbols, field, problem in (
            (["A", "B", "A"], r"symbols\[2\] \(A\)", "duplicate"),
            (["PORTFOLIO", "B", "C"], r"symbols\[0\] \(PORTFOLIO\)", "reserved")):
        with pytest.raises(BookError, match=rf"host: {field}: .*{problem}"):
            BookArrays.from_book(_columns(symbols=symbols), "host")


@pytest.mark.parametrize("n", [3, 1_500])
def test_the_longest_name_is_found_in_short_and_long_books(n):
    """Few names: their lengths; many: the widest gap between separators of the joined text."""
    symbols = [f"S{i}" for i in range(n)]
    symbols[n // 2] = "L" * 64
    ones = [1.0] * n
    columns = dict(equity=1e6, quantity=ones, price=ones, spread=ones, multiplier=ones)
    BookArrays.from_book(BookColumns(symbols=symbols, **columns), "host")
    symbols[n // 2] = "L" * 65
    with pytest.raises(BookError, match=rf"host: symbols\[{n // 2}\]: .*must be 1 to 64"):
        BookArrays.from_book(BookColumns(symbols=symbols, **columns), "host")
