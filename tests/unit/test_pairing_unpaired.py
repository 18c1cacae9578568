"""DSR's unpaired data (DSR section 4.1): the T2I-CompBench, COCO-captions and JourneyDB
readers on files written here, the single-task manifest items (und_only captioning images,
gen_only prompts) built by `pairuni pair pairing.mode=unpaired`, and old manifests still
reading as before."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_pairing_data import BAD_IMAGE

from models.config import ConfigError
from pairing.cli import run_pair
from pairing.config import PairingConfig, UnpairedSources
from pairing.datasets import DataError, load_image_ref
from pairing.manifest import Pair, read_manifest, write_manifest
from pairing.toyworld import write_dsr_world
from pairing.unpaired import prompt_category, read_coco, read_journeydb, read_prompts


@pytest.fixture
def world(tmp_path):
    return write_dsr_world(tmp_path / "dsr", seed=0, n=6)


def test_readers_on_the_released_layouts(world):
    p = read_prompts(tuple(world["prompts"]))
    assert (len(p.items), p.issues, p.rows) == (6, [], 6)
    assert [it.category for it in p.items] == ["color"] * 3 + ["spatial"] * 3
    assert (
        p.items[0].ref.endswith("color_train.txt#line=1") and p.items[0].source == "t2i_compbench"
    )

    c = read_coco(tuple(world["coco_captions"]), world["coco_image_root"])
    assert (len(c.items), c.issues) == (6, [])
    assert all(it.source == "coco" and len(it.references) == 1 for it in c.items)
    assert load_image_ref(c.items[0].image_ref) == c.items[0].image

    j = read_journeydb(tuple(world["journeydb"]))  # default root: imgs/ beside the JSONL
    assert (len(j.items), j.issues) == (6, [])
    caption, prompt = j.items[0].references
    assert prompt.startswith(caption) and prompt.endswith("--ar 1:1")
    assert load_image_ref(j.items[0].image_ref) == j.items[0].image


@pytest.mark.parametrize(
    ("name", "want"),
    [("color_train.txt", "color"), ("non_spatial_val.txt", "non_spatial"), ("p.txt", "p")],
)
def test_prompt_category(name, want):
    assert prompt_category(f"/x/{name}") == want


def test_bad_rows_are_reported_with_file_row_and_field(tmp_path, world):
    f = tmp_path / "complex_train.txt"
    f.write_text("a cat on a mat\n\n  a dog   under a table \n\n")
    p = read_prompts((str(f),))
    assert [it.prompt for it in p.items] == ["a cat on a mat", "a dog under a table"]
    assert [(i.row, i.field, i.reason) for i in p.issues] == [("2", "<line>", "empty line")]
    with pytest.raises(DataError, match=r"complex_train.txt row 2: field '<line>'"):
        read_prompts((str(f),), strict=True)

    captions = json.loads(Path(world["coco_captions"][0]).read_text())
    captions["images"].append({"id": 99, "file_name": "missing.png"})
    captions["images"].append({"id": 98})
    captions["annotations"].append({"image_id": 12345, "caption": "orphan"})
    bad = tmp_path / "captions.json"
    bad.write_text(json.dumps(captions))
    c = read_coco((str(bad),), world["coco_image_root"])
    assert len(c.items) == 6 and c.rows == 9
    got = {(i.row, i.field) for i in c.issues}
    assert got == {
        ("annotations[6]", "image_id"),
        ("images[6]", "file_name"),
        ("images[7]", "file_name"),
    }
    assert any("cannot read" in i.reason and "missing.png" in i.reason for i in c.issues)
    (tmp_path / "notjson.json").write_text("{nope")
    with pytest.raises(DataError, match="notjson.json: not a JSON file"):
        read_coco((str(tmp_path / "notjson.json"),))
    (tmp_path / "nolist.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="nolist.json: no 'images' list.*coco_captions"):
        read_coco((str(tmp_path / "nolist.json"),))

    jsonl = tmp_path / "anno.jsonl"
    (tmp_path / "imgs" / "000").mkdir(parents=True)
    (tmp_path / "imgs" / "000" / "bad.png").write_bytes(BAD_IMAGE)
    jsonl.write_text(
        "\n".join([
            json.dumps({"image": "./000/a.png", "prompt": "x"}),  # not JourneyDB's field
            "{broken",
            json.dumps({"img_path": "./000/bad.png"}),
            "[1]",
        ])
        + "\n"
    )  # fmt: skip
    j = read_journeydb((str(jsonl),))
    assert j.items == [] and j.rows == 4
    # Lines are checked first, images (of the lines drawn) after.
    assert [(i.row, i.field) for i in j.issues] == [
        ("1", "img_path"), ("2", "<line>"), ("4", "<line>"), ("3", "img_path"),
    ]  # fmt: skip
    assert "missing image path (the line's keys: ['image', 'prompt'])" in j.issues[0].reason
    assert "undecodable image" in j.issues[3].reason


def test_sampling_is_seeded_and_counted(world):
    a = read_coco(tuple(world["coco_captions"]), world["coco_image_root"], sample=2, seed=1)
    b = read_coco(tuple(world["coco_captions"]), world["coco_image_root"], sample=2, seed=1)
    assert [i.image_ref for i in a.items] == [i.image_ref for i in b.items]
    assert len(a.items) == 2 and a.excluded == {"not_sampled": 4} and a.rows == 6
    j = read_journeydb(tuple(world["journeydb"]), sample=3, seed=0)
    assert len(j.items) == 3 and j.excluded == {"not_sampled": 3}
    p = read_prompts(tuple(world["prompts"]), limit=4, seed=0)
    assert len(p.items) == 4 and p.excluded == {"not_sampled": 2}


def _cfg(tmp_path, world, **kw) -> PairingConfig:
    src = UnpairedSources(
        prompts=tuple(world["prompts"]),
        coco_captions=tuple(world["coco_captions"]),
        coco_image_root=world["coco_image_root"],
        journeydb=tuple(world["journeydb"]),
        **kw,
    )
    cfg = PairingConfig(mode="unpaired", unpaired=src, output_dir=str(tmp_path / "out"))
    cfg.validate()
    return cfg


def test_unpaired_manifest(tmp_path, world):
    rep = run_pair(_cfg(tmp_path, world, images_per_source=4), strict=False)
    items = read_manifest(str(tmp_path / "out" / "manifest.parquet"))
    assert rep["items"] == {"total": 14, "und_only": 8, "gen_only": 6}
    assert rep["sources"]["coco"] == {
        "rows": 6, "read_errors": 0, "not_sampled": 2, "items": 4, "accounted": True,
    }  # fmt: skip
    assert [p.pair_id for p in items] == list(range(14))  # each item its own group
    und = [p for p in items if p.kind == "und_only"]
    gen = [p for p in items if p.kind == "gen_only"]
    assert [p.und_source for p in und] == ["coco"] * 4 + ["journeydb"] * 4
    for p in und:
        assert (p.question, p.choices, p.answer, p.task_kind) == ("", (), None, "caption")
        assert (p.weight, p.similarity, p.gen_image, p.prompt) == (1.0, 1.0, None, None)
        assert not p.is_pair and load_image_ref(p.und_image)
    for p in gen:
        assert (p.und_image, p.question, p.task_kind, p.gen_source) == (
            None, None, None, "t2i_compbench",
        )  # fmt: skip
        assert p.prompt and p.category in ("color", "spatial") and p.weight == 1.0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["mode"] == "unpaired"


def test_config_checks():
    with pytest.raises(ConfigError, match="pairing.mode"):
        PairingConfig(mode="dsr").validate()
    with pytest.raises(ConfigError, match="pairing.unpaired"):
        PairingConfig(mode="unpaired").validate()
    with pytest.raises(ConfigError, match="pairing.unpaired.images_per_source"):
        PairingConfig(
            mode="unpaired", unpaired=UnpairedSources(prompts=("p.txt",), images_per_source=-1)
        ).validate()


def test_old_manifests_read_as_before(tmp_path):
    pair = Pair(
        0, "retrieved", 0.81, 0.9, "u.parquet#row=0", "Q?", ("a", "b"), "A", "cat", "src",
        "mc", "g.tar#0.png", "a cat", None,
    )  # fmt: skip
    path = str(tmp_path / "m.parquet")
    write_manifest([pair], path)
    table = pq.read_table(path).drop_columns(["task_kind", "gen_source"])
    pq.write_table(table, path)
    (got,) = read_manifest(path)
    assert got == pair and got.task_kind == "qa" and got.is_pair
