"""hetsfl.io: atomic writes leave nothing behind, outputs get the usual mode (0666 minus the umask), and the
JSON writer writes the same data as json.dumps."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from hetsfl.io import atomic_path, json_text, write_bytes, write_json, write_table, write_text


@pytest.fixture
def umask():
    """Set the process umask for a test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_outputs_get_the_usual_mode(tmp_path, umask, mask):
    umask(mask)
    want = 0o666 & ~mask
    write_json(tmp_path / "a.json", {"x": 1})
    write_text(tmp_path / "b.txt", "hi")
    write_bytes(tmp_path / "c.bin", b"\0")
    write_table(tmp_path / "d.csv", pd.DataFrame({"a": [1]}))
    with atomic_path(tmp_path / "e.png") as tmp:
        tmp.write_bytes(b"png")
    for name in ("a.json", "b.txt", "c.bin", "d.csv", "e.png"):
        assert mode(tmp_path / name) == want, (name, oct(mode(tmp_path / name)), oct(want))
    # the same mode as a file made the ordinary way
    (tmp_path / "plain").write_text("x")
    assert mode(tmp_path / "plain") == want


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_json(tmp_path / "out.json", {"x": [1.0, float("nan")]})
    assert list(tmp_path.iterdir()) == []


DOCS = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, None, True, "s"], "c": {"d": {}, "e": []}},
    {"per_device": [{"id": i, "split": 2, "x": 0.1 * i} for i in range(5)], "splits": [1, 2, 3]},
    {"nested": [[1, 2], [3, [4, {"k": "v"}]]], "mixed": [1, {"a": 2}, [3]]},
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key", "é": "ünïcode \"quoted\"\n"},
    {"np": np.arange(3), "f": np.float64(1.5), "i": np.int64(7), "list_np": [np.float32(0.5)]},
]


@pytest.mark.parametrize("doc", DOCS)
def test_json_text_is_json_dumps_data(doc, tmp_path):
    from hetsfl.io import _default

    expected = json.loads(json.dumps(doc, default=_default))
    assert json.loads(json_text(doc)) == expected
    write_json(tmp_path / "x.json", doc)
    assert json.loads((tmp_path / "x.json").read_text()) == expected


def test_records_one_per_line():
    text = json_text({"per_device": [{"id": 0, "b": 1.0}, {"id": 1, "b": 2.0}], "n": 2})
    assert '  {"id": 0, "b": 1.0},\n' in text and '  {"id": 1, "b": 2.0}\n' in text
