"""Generation-benchmark writers, read back with each benchmark's own rules; scores here."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest

from evaluation.config import EvalConfig
from evaluation.genbench import generate_benchmark, t2i_compbench_prompts, wise_prompts
from evaluation.scores import build_scorers, summarize
from models.config import ModelConfig

GENEVAL_LINES = [
    {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    },
    {
        "tag": "color_attr",
        "include": [{"class": "cat", "count": 1, "color": "red"}],
        "exclude": [{"class": "dog", "count": 1}],
        "prompt": "a photo of a red cat",
    },
    {
        "tag": "counting",
        "include": [{"class": "apple", "count": 3}],
        "exclude": [{"class": "apple", "count": 4}],
        "prompt": "a photo of three apples",
    },
]


def read_geneval_tree(imagedir):
    """What GenEval's evaluate_images.py main() reads: every sub-folder whose name is all
    digits, its metadata.jsonl parsed with json.load (one object), and in samples/ the
    files named <digits>.png. Returns [(metadata, [image paths])]."""
    out = []
    for sub in sorted(os.listdir(imagedir)):
        folder = os.path.join(imagedir, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        with open(os.path.join(folder, "metadata.jsonl")) as fp:
            meta = json.load(fp)
        samples = os.path.join(folder, "samples")
        images = [
            os.path.join(samples, n)
            for n in sorted(os.listdir(samples))
            if os.path.isfile(os.path.join(samples, n)) and re.match(r"\d+\.png", n)
        ]
        out.append((meta, images))
    return out


@pytest.fixture(scope="module")
def policy():
    from models.registry import build_policy

    return build_policy(ModelConfig())


@pytest.fixture(scope="module")
def rewards_cfg():
    from deploy.config import RunConfig, load_config

    return load_config(RunConfig, "deploy/configs/smoke.yaml", []).rewards  # tiny HPS


@pytest.mark.slow
def test_geneval_tree_reads_back_with_genevals_rules(tmp_path, policy, rewards_cfg):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(x) + "\n" for x in GENEVAL_LINES))
    scorers = build_scorers(["hps"], rewards_cfg)
    res = generate_benchmark(
        "geneval", policy, [str(meta)], tmp_path / "geneval", ModelConfig(),
        EvalConfig(image_samples=3), seed=7, scorers=scorers,
    )  # fmt: skip
    tree = read_geneval_tree(tmp_path / "geneval")
    assert [m for m, _ in tree] == GENEVAL_LINES  # folder order = prompt order, fields kept
    assert [len(ims) for _, ims in tree] == [3, 3, 3]
    assert sorted(os.listdir(tmp_path / "geneval")) == [
        "00000",
        "00001",
        "00002",
        "generation.json",
    ]
    record = json.loads((tmp_path / "geneval" / "generation.json").read_text())
    assert len(set(record["seeds"])) == 3 and record["images_per_prompt"] == 3
    hps = res["scores"]["hps"]
    assert hps["n"] == 9 and set(hps["by_category"]) == {"single_object", "color_attr", "counting"}
    assert "evaluate_images.py" in res["scorer"]
    # the same seeds draw the same images: a re-run writes identical files
    generate_benchmark(
        "geneval", policy, [str(meta)], tmp_path / "again", ModelConfig(),
        EvalConfig(image_samples=3), seed=7, scorers={},
    )  # fmt: skip
    a = (tmp_path / "geneval" / "00001" / "samples" / "0002.png").read_bytes()
    assert a == (tmp_path / "again" / "00001" / "samples" / "0002.png").read_bytes()


@pytest.mark.slow
def test_t2i_compbench_and_wise_layouts(tmp_path, policy):
    color = tmp_path / "color_val.txt"
    color.write_text("a red apple and a green leaf\na blue car\n")
    shape = tmp_path / "shape_val.txt"
    shape.write_text("a round clock\n")
    generate_benchmark(
        "t2i_compbench", policy, [str(color), str(shape)], tmp_path / "t2i", ModelConfig(),
        EvalConfig(image_samples=2), seed=0, scorers={},
    )  # fmt: skip
    names = sorted(os.listdir(tmp_path / "t2i" / "color" / "samples"))
    # BLIP_vqa.py: the prompt is the name before the first "_", ordered by the last number
    names.sort(key=lambda x: int(x.split("_")[-1].split(".")[0]))
    assert [n.split("_")[0] for n in names] == ["a red apple and a green leaf"] * 2 + [
        "a blue car"
    ] * 2
    assert len(os.listdir(tmp_path / "t2i" / "shape" / "samples")) == 2

    wise = tmp_path / "cultural_common_sense.json"
    rows = [
        {"prompt_id": 1, "Prompt": "a food eaten at the dragon boat festival", "Explanation": "zongzi", "Subcategory": "Festival"},
        {"prompt_id": 2, "Prompt": "the tallest animal", "Explanation": "giraffe", "Subcategory": "Animal"},
    ]  # fmt: skip
    wise.write_text(json.dumps(rows))
    res = generate_benchmark(
        "wise", policy, [str(wise)], tmp_path / "wise", ModelConfig(), EvalConfig(),
        seed=0, scorers={},
    )  # fmt: skip
    # gpt_eval.py looks each prompt's image up as <image_dir>/<prompt_id>.png
    assert all((tmp_path / "wise" / f"{r['prompt_id']}.png").is_file() for r in rows)
    assert res["images_per_prompt"] == 1 and "gpt_eval.py" in res["scorer"]


def test_reader_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "color_val.txt"
    bad.write_text("a red_apple\n")
    with pytest.raises(ValueError, match=r"color_val.txt:1"):
        t2i_compbench_prompts([str(bad)])
    w = tmp_path / "w.json"
    w.write_text(json.dumps([{"prompt_id": 1}]))
    with pytest.raises(ValueError, match=r"item 0: missing field\(s\) \['Prompt'\]"):
        wise_prompts([str(w)])


def test_summarize_mean_std_and_categories():
    # mean of (1, 2, 3) = 2; population std = sqrt(((1)^2 + 0 + 1^2) / 3) = sqrt(2/3)
    s = summarize([1.0, 2.0, 3.0, math.nan], ["a", "b", "b", "a"])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(math.sqrt(2 / 3))
    assert s["n"] == 3 and s["failed"] == 1
    assert s["by_category"] == {"a": 1.0, "b": 2.5}


def test_toy_judge_scores_toy_world_images():
    from rewards.toy import GRID

    scorers = build_scorers(["toy_judge"], None)
    blank = np.zeros((GRID * 4, GRID * 4, 3), np.uint8)
    vals = scorers["toy_judge"]([blank, blank], ["not a toy prompt", "not one either"])
    assert all(math.isnan(v) for v in vals)  # outside the grammar: failed, never 0
    with pytest.raises(ValueError, match="valid"):
        build_scorers(["nope"], None)
