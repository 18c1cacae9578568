"""The toy judge: hand-derived agreement terms."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.toy import (
    cell_labels,
    judge_details,
    judge_terms,
    parse_prompt,
    strict_success,
    toy_judge_reward,
)

RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "white": (255, 255, 255), "grey": (128, 128, 128)}
PROMPT = "a red square in the top left on a white background"


def grid(cells: dict, bg="white") -> np.ndarray:
    img = np.empty((4, 4, 3), np.uint8)
    img[:] = RGB[bg]
    for (r, c), name in cells.items():
        img[r, c] = RGB[name]
    return img.repeat(16, 0).repeat(16, 1)


SQUARE = {(0, 0): "red", (0, 1): "red", (1, 0): "red", (1, 1): "red"}


def test_perfect_image_scores_one():
    assert judge_terms(grid(SQUARE), PROMPT) == {
        "background": 1.0,
        "colour": 1.0,
        "shape": 1.0,
        "position": 1.0,
    }
    assert toy_judge_reward(grid(SQUARE), PROMPT) == 1.0
    assert judge_details(grid(SQUARE), PROMPT)["strict"] == 1.0


def test_wrong_colour():
    # 4 blue cells, 12 white: background 12 / (16 - 4) = 1; no red cell -> colour 0 / 4,
    # shape Jaccard 0, position 0 -> product 0 (the mean of the terms would have paid 0.25)
    img = grid({k: "blue" for k in SQUARE})
    assert judge_terms(img, PROMPT) == {
        "background": 1.0,
        "colour": 0.0,
        "shape": 0.0,
        "position": 0.0,
    }
    assert toy_judge_reward(img, PROMPT) == 0.0


def test_extra_cell():
    # + a red cell at (3, 3): red = 5 cells, not-background 5 -> colour 1; background 11/12;
    # best square Jaccard 4/5; centroid row (0+0+1+1+3)/5 + 0.5 = 1.5, col 1.5 -> top left
    img = grid({**SQUARE, (3, 3): "red"})
    t = judge_terms(img, PROMPT)
    assert t == pytest.approx({"background": 11 / 12, "colour": 1.0, "shape": 0.8, "position": 1.0})
    # not exactly right: the strict half is 0, the product half 11/12 x 1 x 0.8 x 1
    assert toy_judge_reward(img, PROMPT) == pytest.approx(0.5 * 11 / 12 * 0.8)
    assert not strict_success(t)
    assert judge_details(img, PROMPT)["strict"] == 0.0


def test_partial_credit_in_the_wrong_place_earns_nothing():
    # The image RL collapsed to under the mean-of-terms judge: two cells of the prompt's
    # colour in the top-left corner, for "a red cross in the bottom right". Background
    # 14 / (16 - 5) -> capped at 1; colour 2 / 2 = 1; best cross Jaccard: the cross at rows
    # 0-2, cols 0-2 holds (0, 1) only -> 1 / (2 + 5 - 1) = 1/6; centroid row 0.5, col 1.0
    # -> top left, not bottom right -> position 0. Mean (1 + 1 + 1/6 + 0) / 4 = 0.54;
    # product 0, strict 0 -> 0.
    img = grid({(0, 0): "red", (0, 1): "red"})
    prompt = "a red cross in the bottom right on a white background"
    t = judge_terms(img, prompt)
    assert t == pytest.approx({"background": 1.0, "colour": 1.0, "shape": 1 / 6, "position": 0})
    assert toy_judge_reward(img, prompt) == 0.0


def test_partly_drawn_shape_in_the_right_place_is_graded():
    # One red cell at (3, 2) for "a red cross in the bottom right": background 15 / 11 -> 1,
    # colour 1, shape: the cross centred at (2, 2) has (3, 2) as its lower arm -> Jaccard
    # 1 / 5; position: centroid row 3.5, col 2.5 -> bottom right -> 1. Product 1/5, not
    # strict: reward 1/10, less than a whole cross, more than nothing. ((3, 3) would score
    # 0: no cross on the grid holds a corner cell.)
    img = grid({(3, 2): "red"})
    prompt = "a red cross in the bottom right on a white background"
    assert toy_judge_reward(img, prompt) == pytest.approx(1 / 10)
    # four of the cross's five cells: Jaccard 4/5 -> 0.4; the whole cross -> 1.0
    cross = {(1, 2): "red", (2, 1): "red", (2, 2): "red", (2, 3): "red", (3, 2): "red"}
    near = {k: v for k, v in cross.items() if k != (3, 2)}
    assert toy_judge_reward(grid(near), prompt) == pytest.approx(0.4)
    assert toy_judge_reward(grid(cross), prompt) == 1.0


def test_grey_is_other_and_bad_input():
    assert cell_labels(grid({}, bg="grey"))[0, 0] == "other"
    # all grey: 0 background cells / 12, nothing red -> 0
    assert toy_judge_reward(grid({}, bg="grey"), PROMPT) == 0.0
    assert parse_prompt("a purple square in the top left on a white background") is None
    assert toy_judge_reward(grid(SQUARE), "a photo of a cat") is None
    with pytest.raises(ValueError, match="divisible"):
        cell_labels(np.zeros((10, 10, 3), np.uint8))
