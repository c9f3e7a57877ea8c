"""Book files and host books: every bad input names the file, symbol and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import book, position
from stress_hookspecs import Book, Position
from stress_plugin import load_book
from stress_plugin.core.book import BookArrays
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
