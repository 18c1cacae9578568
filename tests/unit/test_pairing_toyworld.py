"""The toy world: geometry, scenes, questions, files, held-out split and the augmentation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pairing.config import GenerationSource, UnderstandingSource
from pairing.datasets import read_generation, read_understanding
from pairing.manifest import Pair, read_manifest, write_manifest
from pairing.toyworld import (
    Scene,
    WorldSize,
    complete_aligned,
    object_scenes,
    prompt_of,
    quadrant_of,
    question_of,
    render,
    shape_placements,
    write_world,
)

SMALL = WorldSize(und_train=40, und_eval=12, gen_train=20, gen_eval=8)


def test_placements_counted_by_hand():
    # dot: 4 x 4 cells; line: 2 orientations x 4 rows/cols x 2 offsets; square: 3 x 3
    # top-left corners; cross (3 x 3 box): 2 x 2.
    counts = {s: len(shape_placements(s)) for s in ("dot", "line", "square", "cross")}
    assert counts == {"dot": 16, "line": 16, "square": 9, "cross": 4}


def test_quadrants_by_hand():
    # centroid = mean index + 0.5: row 0.5, col 1.5 -> top left
    assert quadrant_of([(0, 0), (0, 1), (0, 2)]) == "top left"
    # cols 1..3 -> col 2.5 -> right; row 3.5 -> bottom
    assert quadrant_of([(3, 1), (3, 2), (3, 3)]) == "bottom right"
    # a square at (1, 1) has its centroid on both midlines
    assert quadrant_of([(1, 1), (1, 2), (2, 1), (2, 2)]) is None
    assert quadrant_of([]) is None


def test_object_scenes_have_quadrants():
    scenes = object_scenes()
    # squares: only the 4 corner placements have a quadrant; every dot, line and cross does:
    # 2 backgrounds x 4 colours x (16 + 16 + 4 + 4) = 320
    assert len(scenes) == 320
    assert all(s.quadrant is not None for s in scenes)


def test_render_question_prompt():
    s = Scene("black", "yellow", "cross", ((1, 2), (2, 1), (2, 2), (2, 3), (3, 2)))
    img = render(s)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[16 + 5, 32 + 7]) == (255, 255, 0)  # cell (1, 2) is yellow
    assert tuple(img[0, 0]) == (0, 0, 0)  # cell (0, 0) is background
    # centroid row 2 + 0.5, col 2 + 0.5 -> bottom right (option D)
    assert prompt_of(s) == "a yellow cross in the bottom right on a black background"
    assert question_of(s, "colour")[1] == "D"  # red green blue yellow
    q, a = question_of(s, "position")
    assert a == "D" and q.splitlines()[1:] == [
        "A. top left",
        "B. top right",
        "C. bottom left",
        "D. bottom right",
    ]
    assert question_of(s, "shape")[1] == "D"  # dot line square cross


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_world_files_deterministic_readable_and_disjoint(tmp_path):
    a = write_world(tmp_path / "a", seed=3, size=SMALL)
    b = write_world(tmp_path / "b", seed=3, size=SMALL)
    for key in ("und_train", "und_eval", "gen_train", "gen_eval", "scenes"):
        assert _digest(tmp_path / "a" / a[key].split("/")[-1]) == _digest(
            tmp_path / "b" / b[key].split("/")[-1]
        )
    u = read_understanding(UnderstandingSource(paths=(a["und_train"],)), strict=True)
    ue = read_understanding(UnderstandingSource(paths=(a["und_eval"],)), strict=True)
    g = read_generation(GenerationSource(paths=(a["gen_train"],)), strict=True)
    ge = read_generation(GenerationSource(paths=(a["gen_eval"],)), strict=True)
    assert (len(u.items), len(ue.items), len(g.items), len(ge.items)) == (40, 12, 20, 8)
    assert all(len(it.choices) == 4 and it.answer in "ABCD" for it in u.items + ue.items)
    # held out: no evaluation image is a training image; no held-out prompt is trained on
    assert not {it.image for it in ue.items} & {it.image for it in u.items}
    assert not {it.prompt for it in ge.items} & {it.prompt for it in g.items}


def _pair(pid, kind, need, und_image, gen_image, prompt=None) -> Pair:
    return Pair(
        pair_id=pid,
        kind=kind,
        similarity=1.0,
        weight=1.0,
        und_image=und_image,
        question=None,
        choices=(),
        answer=None,
        category=None,
        und_source=None,
        verifier=None,
        gen_image=gen_image,
        prompt=prompt,
        needs_augmentation=need,
    )


def test_complete_aligned_fills_the_missing_half(tmp_path):
    w = write_world(tmp_path / "w", seed=0, size=SMALL)
    und_ref = f"{w['und_train']}#row=0&column=images&image=0"
    gen_ref = f"{w['gen_train']}#000001.png"
    gen = read_generation(GenerationSource(paths=(w["gen_train"],)), strict=True)
    pairs = [
        _pair(0, "aligned", "generation", und_ref, und_ref),
        _pair(1, "aligned", "understanding", gen_ref, gen_ref, gen.items[1].prompt),
    ]
    write_manifest(pairs, str(tmp_path / "m.parquet"))
    filled = complete_aligned(
        str(tmp_path / "m.parquet"), tmp_path / "w", str(tmp_path / "o.parquet")
    )
    out = read_manifest(str(tmp_path / "o.parquet"))
    u = read_understanding(UnderstandingSource(paths=(w["und_train"],)), strict=True).items[0]
    if u.category == "count":  # a count image has no caption in the toy grammar
        assert out[0].needs_augmentation == "generation" and filled["left"] == 1
    else:
        assert out[0].needs_augmentation is None and out[0].prompt.startswith("a ")
    assert out[1].needs_augmentation is None and out[1].answer in "ABCD"
    assert len(out[1].choices) == 4 and filled["understanding"] == 1
    bad = [_pair(0, "aligned", "generation", "nowhere.parquet#row=9", "x")]
    write_manifest(bad, str(tmp_path / "bad.parquet"))
    with pytest.raises(KeyError, match="pair 0"):
        complete_aligned(str(tmp_path / "bad.parquet"), tmp_path / "w", str(tmp_path / "x.parquet"))
