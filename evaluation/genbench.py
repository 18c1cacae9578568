"""Generation benchmarks in their official layouts: GenEval, T2I-CompBench, WISE.

Each reads the benchmark's own prompt files, samples images with the policy, writes them
where the benchmark's scorer looks for them, records the seeds (``generation.json``, a name
the scorers skip) and scores the set here (``evaluation.scores``: mean ± std and per
category). The official scorers need detectors or judges we do not ship; the command to run
each is returned (and printed by `pairuni eval`).

* **GenEval** (``evaluation_metadata.jsonl``, one JSON object per prompt with ``tag``,
  ``prompt``, ``include``): ``<out>/<05d prompt index>/metadata.jsonl`` holding the prompt's
  object, and ``samples/<04d>.png``, N per prompt. GenEval's ``evaluate_images.py`` reads
  every folder whose name is all digits, ``json.load``s its ``metadata.jsonl`` and scores the
  ``samples/`` files named ``<digits>.png``.
* **T2I-CompBench** (``<category>_val.txt``, one prompt a line): ``<out>/<category>/samples/
  <prompt>_<06d running index>.png``: its BLIP-VQA script takes the prompt as the file name
  before the first ``_`` and orders files by the number after the last one.
* **WISE** (its JSON list of ``{prompt_id, Prompt, Explanation, Subcategory}``):
  ``<out>/<prompt_id>.png``, one image per prompt, as its ``gpt_eval.py`` looks them up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.scores import score_set

BENCHMARKS = ("geneval", "t2i_compbench", "wise")
"""The ``eval.*`` keys naming each benchmark's prompt files."""


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt: its text, its category, what the writer needs to place it."""

    text: str
    category: str
    meta: dict


def geneval_prompts(path: str) -> list[Prompt]:
    """GenEval's ``evaluation_metadata.jsonl`` (553 prompts): one JSON object per line."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"eval.geneval: {path}:{i}: not JSON ({e})") from e
        missing = [k for k in ("tag", "prompt", "include") if k not in meta]
        if missing:
            raise ValueError(f"eval.geneval: {path}:{i}: missing field(s) {missing}")
        out.append(Prompt(meta["prompt"], meta["tag"], meta))
    return out


def t2i_compbench_prompts(paths) -> list[Prompt]:
    """T2I-CompBench prompt files, the category from each file's name (``color_val.txt``:
    color). A prompt with ``_`` or ``/`` cannot be a file name its scripts read back."""
    out = []
    for path in paths:
        category = Path(path).stem
        for suffix in ("_val", "_train", "_test"):
            category = category.removesuffix(suffix)
        for i, line in enumerate(Path(path).read_text().splitlines(), 1):
            text = line.strip()
            if not text:
                continue
            if "_" in text or "/" in text:
                raise ValueError(
                    f"eval.t2i_compbench: {path}:{i}: {text!r} has '_' or '/', which "
                    "T2I-CompBench's file naming (<prompt>_<index>.png) cannot carry"
                )
            out.append(Prompt(text, category, {}))
    return out


def wise_prompts(paths) -> list[Prompt]:
    """WISE's prompt JSON files: lists of ``{prompt_id, Prompt, Explanation, Subcategory}``."""
    out, seen = [], set()
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, list):
            raise ValueError(f"eval.wise: {path}: expected a JSON list of prompts")
        for i, row in enumerate(data):
            missing = [k for k in ("prompt_id", "Prompt") if k not in row]
            if missing:
                raise ValueError(f"eval.wise: {path}: item {i}: missing field(s) {missing}")
            if row["prompt_id"] in seen:
                raise ValueError(f"eval.wise: {path}: item {i}: prompt_id {row['prompt_id']} twice")
            seen.add(row["prompt_id"])
            out.append(Prompt(row["Prompt"], str(row.get("Subcategory", "")), row))
    return out


def _save(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def write_geneval(folder: Path, prompts: list[Prompt], images: list[list]) -> None:
    for i, (p, ims) in enumerate(zip(prompts, images)):
        d = folder / f"{i:05d}"
        (d / "samples").mkdir(parents=True, exist_ok=True)
        (d / "metadata.jsonl").write_text(json.dumps(p.meta) + "\n")
        for j, im in enumerate(ims):
            _save(im, d / "samples" / f"{j:04d}.png")


def write_t2i_compbench(folder: Path, prompts: list[Prompt], images: list[list]) -> None:
    counters: dict[str, int] = {}
    for p, ims in zip(prompts, images):
        for im in ims:
            k = counters.get(p.category, 0)
            _save(im, folder / p.category / "samples" / f"{p.text}_{k:06d}.png")
            counters[p.category] = k + 1


def write_wise(folder: Path, prompts: list[Prompt], images: list[list]) -> None:
    for p, ims in zip(prompts, images):
        _save(ims[0], folder / f"{p.meta['prompt_id']}.png")


READERS = {"geneval": geneval_prompts, "t2i_compbench": t2i_compbench_prompts, "wise": wise_prompts}
WRITERS = {"geneval": write_geneval, "t2i_compbench": write_t2i_compbench, "wise": write_wise}


def scorer_command(name: str, folder: Path, source) -> str:
    """The official scorer's command on ``folder`` (run from the benchmark's checkout)."""
    if name == "geneval":
        return (
            f"python evaluation/evaluate_images.py {folder} --outfile {folder}/results.jsonl "
            f"--model-path <mask2former dir> && python evaluation/summary_scores.py "
            f"{folder}/results.jsonl"
        )
    if name == "t2i_compbench":
        return (
            f"for d in {folder}/*/; do python BLIPvqa_eval/BLIP_vqa.py --out_dir=$d; done  "
            "(spatial: UniDet_eval/2D_spatial_eval.py, non-spatial: "
            "CLIPScore_eval/CLIP_similarity.py, complex: 3_in_1_eval/3_in_1.py)"
        )
    files = " ".join(str(s) for s in source)
    return (
        f"for f in {files}; do python gpt_eval.py --json_path $f --image_dir {folder} "
        "--output_dir <out> --api_key $OPENAI_API_KEY --model gpt-4o-2024-05-13 "
        "--result_full full.json --result_scores scores.jsonl; done"
    )


def generate_benchmark(
    name: str, policy, source, folder: Path, model_cfg, eval_cfg, seed: int, scorers: dict
) -> dict:
    """Read ``source``, sample (``eval.image_samples`` per prompt; WISE: 1), write the
    official layout under ``folder``, score here; returns the summary `pairuni eval` keeps."""
    import torch
    from tqdm import tqdm

    if name not in READERS:
        raise ValueError(f"unknown generation benchmark {name!r}; valid: {list(READERS)}")
    files = [source] if isinstance(source, str) else list(source)
    if name == "geneval" and len(files) != 1:
        raise ValueError(f"eval.geneval: give one evaluation_metadata.jsonl, not {files}")
    src = files[0] if name == "geneval" else files
    prompts = READERS[name](src)
    n = 1 if name == "wise" else eval_cfg.image_samples
    images, seeds = [], []
    with torch.no_grad():
        for i, p in enumerate(tqdm(prompts, desc=f"{name} images", unit="prompt")):
            s = seed * 1_000_003 + i  # one seed per prompt, recorded below
            tokens = policy.sample_image_tokens(
                [p.text], n=n, cfg_weight=model_cfg.cfg_weight, seed=s
            )
            images.append(list(policy.decode_images(tokens.tokens)))  # n x [H, W, 3]
            seeds.append(s)
    folder = Path(folder)
    WRITERS[name](folder, prompts, images)
    flat = [im for ims in images for im in ims]
    texts = [p.text for p in prompts for _ in range(n)]
    cats = [p.category for p in prompts for _ in range(n)]
    scores = score_set(flat, texts, cats, scorers)
    record = {
        "benchmark": name,
        "folder": str(folder),
        "prompts": len(prompts),
        "images_per_prompt": n,
        "seeds": seeds,
        "cfg_weight": model_cfg.cfg_weight,
        "scores": scores,
        "scorer": scorer_command(name, folder, files),
    }
    (folder / "generation.json").write_text(json.dumps(record, indent=2))
    return {k: v for k, v in record.items() if k != "seeds"}
