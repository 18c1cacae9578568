"""Orsta task exclusions (PairUni section 3.1: detection and grounding items are left out of
U): the reader skips them by their kind column, counts them per kind, and `pairuni pair`
accounts for them in the report. Parquet files written here."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_pairing_data import COLORS, png, und_row, write_gen_tar
from test_pairing_pipeline import _config

from pairing.cli import run_pair
from pairing.config import PairingConfig, UnderstandingSource
from pairing.datasets import DataError, excluded_kind, read_understanding
from pairing.manifest import read_manifest

ABILITIES = ["math", "cv_detection", "chart", "cv_grounding", "Detection", "ocr", None, "math"]


def write_orsta(path, abilities=ABILITIES, drop_ability=False):
    rows = []
    for i, ability in enumerate(abilities):
        r = und_row(i, png(COLORS[i % len(COLORS)], stripe=COLORS[(i + 3) % 8]))
        r["ability"] = ability
        if drop_ability:
            del r["ability"]
        rows.append(r)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_defaults_are_the_papers_exclusions():
    assert UnderstandingSource().exclude_kinds == ("detection", "grounding")
    assert UnderstandingSource().kind_field == "ability"


@pytest.mark.parametrize(
    "value,want",
    [
        ("cv_detection", "detection"),
        ("Detection", "detection"),
        ("visual-grounding", "grounding"),
        ("grounding", "grounding"),
        ("v3det_train", None),  # 'det' is not 'detection'
        ("detectionish", None),  # whole words only
        ("math", None),
        (None, None),
    ],
)
def test_excluded_kind_matches_words(value, want):
    assert excluded_kind(value, ("detection", "grounding")) == want


def test_reader_skips_and_counts_excluded_kinds(tmp_path):
    path = write_orsta(tmp_path / "orsta.parquet")
    res = read_understanding(UnderstandingSource(paths=(str(path),)))
    assert res.excluded == {"detection": 2, "grounding": 1}
    assert [it.category for it in res.items] == ["math", "chart", "ocr", "", "math"]
    assert res.rows == len(ABILITIES) and not res.issues
    # Row numbers in the refs are the file's rows: the kept ones, not renumbered.
    rows = [it.image_ref.split("row=")[1].split("&")[0] for it in res.items]
    assert rows == ["0", "2", "5", "6", "7"]


def test_empty_exclusions_keep_every_row(tmp_path):
    path = write_orsta(tmp_path / "orsta.parquet")
    res = read_understanding(UnderstandingSource(paths=(str(path),), exclude_kinds=()))
    assert len(res.items) == len(ABILITIES) and res.excluded == {}


def test_other_kind_column_and_words(tmp_path):
    path = write_orsta(tmp_path / "orsta.parquet")
    src = UnderstandingSource(
        paths=(str(path),), kind_field="data_source", exclude_kinds=("shape",)
    )
    res = read_understanding(src)  # und_row: odd rows are data_source orsta_shape
    assert res.excluded == {"shape": 4} and len(res.items) == 4


def test_missing_kind_column_is_a_clear_error(tmp_path):
    path = write_orsta(tmp_path / "orsta.parquet", drop_ability=True)
    with pytest.raises(DataError) as e:
        read_understanding(UnderstandingSource(paths=(str(path),)))
    msg = str(e.value)
    assert str(path) in msg and "'ability'" in msg and "pairing.und.kind_field" in msg
    assert "pairing.und.exclude_kinds=[]" in msg
    # Without exclusions the column is not needed.
    res = read_understanding(UnderstandingSource(paths=(str(path),), exclude_kinds=()))
    assert len(res.items) == len(ABILITIES)


def test_report_counts_excluded_rows_per_kind(tmp_path):
    write_orsta(tmp_path / "u.parquet")
    write_gen_tar(tmp_path / "g-000.tar", n=6, bad_rows=False)
    cfg: PairingConfig = _config(tmp_path)
    rep = run_pair(cfg, strict=False)
    u = rep["und"]
    assert u["rows"] == 8 and u["excluded"] == 3
    assert u["excluded_by_kind"] == {"detection": 2, "grounding": 1}
    assert u["accounted"] and u["aligned"] + u["retrieved"] + u["unpaired_no_match"] == 5
    assert rep["settings"]["exclude_kinds"] == ["detection", "grounding"]
    kept = {p.category for p in read_manifest(str(tmp_path / "out" / "manifest.parquet"))}
    assert not kept & {"cv_detection", "cv_grounding", "Detection"}
