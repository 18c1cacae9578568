"""Readers (parquet / webdataset / folder+JSONL), manifest IO, report accounting."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pairing.config import GenerationSource, UnderstandingSource
from pairing.core import AlignedPick, PairSet, RetrievedPair
from pairing.datasets import (
    DataError,
    GenItem,
    UndItem,
    load_image_ref,
    parse_choices,
    read_generation,
    read_understanding,
)
from pairing.manifest import Pair, pairs_from_pairset, read_manifest, write_manifest
from pairing.report import RowIssue, build_report, write_report

BAD_IMAGE = b"\x89PNG but not really an image"


def png(color, size=24, stripe=None) -> bytes:
    im = Image.new("RGB", (size, size), color)
    if stripe is not None:  # a second colour in the left half: visually distinct images
        im.paste(stripe, (0, 0, size // 2, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


COLORS = [
    (220, 30, 30),
    (30, 200, 40),
    (20, 40, 210),
    (240, 220, 20),
    (200, 30, 200),
    (20, 200, 200),
    (120, 60, 10),
    (250, 250, 250),
]


def und_row(i: int, image: bytes | None, answer: str | None = "A") -> dict:
    return {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"<image>Which colour is shown? ({i})\nA. red\nB. green"},
        ],
        "images": [{"bytes": image, "path": None}],
        "reward_model": {"ground_truth": answer, "verifier": "mc"},
        "data_source": "orsta_color" if i % 2 == 0 else "orsta_shape",
        "ability": "perception",
    }


def write_und_parquet(path: Path, n: int = 6, bad_rows=True) -> Path:
    """n good rows (image i = COLORS[i]), then an undecodable image and a missing answer."""
    rows = [und_row(i, png(COLORS[i % len(COLORS)], stripe=COLORS[(i + 3) % 8])) for i in range(n)]
    if bad_rows:
        rows.append(und_row(n, BAD_IMAGE))
        rows.append(und_row(n + 1, png(COLORS[0]), answer=None))
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_gen_tar(path: Path, n: int = 6, bad_rows=True) -> Path:
    """n good samples (image i = COLORS[i]), then a key without a caption."""
    with tarfile.open(path, "w") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in range(n):
            add(f"{i:05d}.png", png(COLORS[i % len(COLORS)], stripe=COLORS[(i + 3) % 8]))
            add(f"{i:05d}.txt", f"a picture number {i}".encode())
        if bad_rows:
            add("nocap.png", png(COLORS[1]))
    return path


def write_gen_jsonl(root: Path) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "img" / "a.png").write_bytes(png(COLORS[0]))
    (root / "img" / "b.png").write_bytes(BAD_IMAGE)
    lines = [
        {"image": "img/a.png", "prompt": "red square"},
        {"image": "img/b.png", "prompt": "broken"},
        {"image": "img/missing.png", "prompt": "nothing here"},
        {"image": "img/a.png"},
    ]
    path = root / "gen.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    return path


# ----------------------------------------------------------------------------- readers


def test_parse_choices():
    assert parse_choices("Pick one\nA. red\nB) green\n(C) blue") == ("red", "green", "blue")
    assert parse_choices("What is 2+2?") == ()
    assert parse_choices("A. only one option") == ()
    assert parse_choices("B. starts at B\nC. no") == ()  # must start at A


def test_read_understanding_items_and_issues(tmp_path):
    path = write_und_parquet(tmp_path / "u.parquet", n=3)
    res = read_understanding(UnderstandingSource(paths=(str(path),)))
    assert res.rows == 5 and len(res.items) == 3 and len(res.issues) == 2
    it = res.items[1]
    assert it.question == "Which colour is shown? (1)\nA. red\nB. green"  # <image> removed
    assert it.choices == ("red", "green") and it.answer == "A"
    assert (it.source, it.category, it.verifier) == ("orsta_shape", "perception", "mc")
    assert load_image_ref(it.image_ref) == it.image
    bad_img, no_answer = res.issues
    assert (bad_img.file, bad_img.row, bad_img.field) == (str(path), "3", "images")
    assert "undecodable" in bad_img.reason
    assert (no_answer.row, no_answer.field) == ("4", "reward_model.ground_truth")


def test_read_understanding_strict_and_missing_column(tmp_path):
    path = write_und_parquet(tmp_path / "u.parquet", n=2)
    with pytest.raises(DataError, match=r"u\.parquet row 2: field 'images': undecodable"):
        read_understanding(UnderstandingSource(paths=(str(path),)), strict=True)
    with pytest.raises(
        DataError, match=r"column 'answers' \(answer\) not in the file.*answer_field"
    ):
        read_understanding(UnderstandingSource(paths=(str(path),), answer_field="answers.gt"))
    with pytest.raises(DataError, match=r"pairing.und.paths: .*matches no file"):
        read_understanding(UnderstandingSource(paths=(str(tmp_path / "none-*.parquet"),)))


def test_read_webdataset(tmp_path):
    path = write_gen_tar(tmp_path / "g-000.tar", n=2)
    res = read_generation(GenerationSource(format="webdataset", paths=(str(tmp_path / "g-*.tar"),)))
    assert res.rows == 3 and [it.prompt for it in res.items] == [
        "a picture number 0",
        "a picture number 1",
    ]
    assert res.items[0].image_ref == f"{path}#00000.png"
    assert load_image_ref(res.items[0].image_ref) == res.items[0].image
    (iss,) = res.issues
    assert (iss.row, iss.field, iss.reason) == ("nocap", "txt", "missing or empty caption")


def test_read_folder_jsonl(tmp_path):
    path = write_gen_jsonl(tmp_path)
    res = read_generation(GenerationSource(format="folder_jsonl", paths=(str(path),)))
    assert res.rows == 5 and len(res.items) == 1
    assert res.items[0].prompt == "red square"
    assert load_image_ref(res.items[0].image_ref) == (tmp_path / "img" / "a.png").read_bytes()
    got = [(i.row, i.field) for i in res.issues]
    assert got == [("2", "image"), ("3", "image"), ("4", "prompt"), ("5", "<line>")]
    assert "undecodable" in res.issues[0].reason and "cannot read" in res.issues[1].reason


# ----------------------------------------------------------------------------- manifest, report


def _items():
    und = [
        UndItem(
            f"u.parquet#row={i}&column=images&image=0",
            b"",
            f"q{i}",
            ("A. x", "B. y"),
            "A",
            "cat" if i else "dog",
            "src",
            "mc",
        )
        for i in range(3)
    ]
    gen = [GenItem(f"g.tar#{j}.png", b"", f"caption {j}") for j in range(3)]
    return und, gen


def test_pairs_from_pairset_and_roundtrip(tmp_path):
    und, gen = _items()
    ps = PairSet(
        assignments=np.array([0, 0, 0, 1, 1, 1]),
        centroids=np.zeros((2, 2)),
        aligned=[AlignedPick("und", 0, 0), AlignedPick("gen", 2, 1)],
        retrieved=[RetrievedPair(2, 1, 0.81)],
        num_und=3,
        num_gen=3,
    )
    pairs = pairs_from_pairset(ps, und, gen)
    a_und, a_gen, r = pairs
    # Aligned from an understanding medoid: the image is shared, the caption is missing.
    assert (a_und.kind, a_und.question, a_und.gen_image, a_und.prompt) == (
        "aligned",
        "q0",
        und[0].image_ref,
        None,
    )
    assert a_und.needs_augmentation == "generation" and a_und.weight == 1.0
    # Aligned from a generation medoid: Q and A are missing.
    assert (a_gen.und_image, a_gen.question, a_gen.answer, a_gen.prompt) == (
        gen[2].image_ref,
        None,
        None,
        "caption 2",
    )
    assert a_gen.needs_augmentation == "understanding"
    # Retrieved: w = sqrt(0.81) = 0.9.
    assert (r.und_image, r.gen_image, r.prompt) == (und[2].image_ref, gen[1].image_ref, "caption 1")
    assert r.weight == pytest.approx(0.9) and r.needs_augmentation is None
    assert [p.pair_id for p in pairs] == [0, 1, 2]
    write_manifest(pairs, str(tmp_path / "m.parquet"))
    assert read_manifest(str(tmp_path / "m.parquet")) == pairs


def test_report_accounts_for_every_row(tmp_path):
    und, gen = _items()
    ps = PairSet(
        np.zeros(6, int),
        np.zeros((2, 2)),
        [AlignedPick("und", 0, 0), AlignedPick("gen", 2, 1)],
        [RetrievedPair(2, 1, 0.81)],
        3,
        3,
    )
    pairs = pairs_from_pairset(ps, und, gen)
    issues = [
        RowIssue("und", "read", "u.parquet", "3", "images", "undecodable"),
        RowIssue("gen", "features", "g.tar", "x.png", "image", "bad"),
    ]
    rep = build_report(
        pairs,
        und_rows=4,
        gen_rows=4,
        issues=issues,
        gen_paired_items=1,
        settings={"threshold": 0.6},
        stats={},
    )
    # und: 4 rows = 1 read error + 0 feature + 1 aligned + 1 retrieved + 1 unpaired (u1).
    assert rep["und"] == {
        "rows": 4,
        "read_errors": 1,
        "feature_errors": 0,
        "aligned": 1,
        "retrieved": 1,
        "unpaired_no_match": 1,
        "accounted": True,
    }
    # gen: 4 rows = 0 read + 1 feature + 1 aligned (g2) + 1 paired (g1) + 1 unpaired (g0).
    assert rep["gen"]["unpaired_no_match"] == 1 and rep["gen"]["feature_errors"] == 1
    assert rep["by_category"] == {
        "(none)": {"aligned": 1},
        "cat": {"retrieved": 1},
        "dog": {"aligned": 1},
    }
    assert rep["similarity"]["count"] == 1 and sum(rep["similarity"]["histogram"]["counts"]) == 1
    write_report(rep, pairs, issues, str(tmp_path))
    assert (tmp_path / "similarity_hist.png").stat().st_size > 1000
    lines = (tmp_path / "issues.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["stage"] == "features"


def test_manifest_reader_rejects_other_files(tmp_path):
    pq.write_table(pa.table({"pair_id": [0]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        read_manifest(str(tmp_path / "x.parquet"))


def test_pair_is_frozen():
    p = Pair(0, "aligned", 1.0, 1.0, "i", "q", (), "a", "c", "s", "v", "i", None, "generation")
    with pytest.raises(AttributeError):
        p.weight = 2.0
