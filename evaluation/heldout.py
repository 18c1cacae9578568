"""Held-out evaluation of a policy: understanding accuracy (greedy and sampled) and scores of
sampled images. One path for the quickstart's before / after numbers and for
``train.eval_every`` during training.

The model is any ``models.interface.UnifiedPolicy``; data are read with the project's own
readers (``pairing.datasets``): understanding items in the verl / Orsta parquet layout,
generation prompts from JSONL (a ``prompt`` per line, GenEval's metadata included) or
webdataset shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.scores import by_category


@dataclass(frozen=True)
class HeldOut:
    """Held-out items: understanding (image uint8 [H, W, 3], question as the model reads it,
    answer, category) and generation prompts."""

    und: list
    prompts: list[str]


@dataclass(frozen=True)
class Settings:
    """How ``evaluate`` samples (the run's sampling settings, the eval counts)."""

    answer_samples: int = 8
    """Answers sampled per question (sampled accuracy)."""
    image_samples: int = 4
    """Images sampled per prompt."""
    text_temperature: float = 1.0
    """Temperature of the sampled answers (RL's, model.text_temperature)."""
    cfg_weight: float = 5.0
    """Classifier-free guidance weight of sampled images (model.cfg_weight)."""
    max_new_tokens: int = 4
    """Tokens per answer (a letter, and room for a short phrase)."""


def read_prompts(path: str) -> list[str]:
    """Prompts of a generation file: JSONL rows' ``prompt`` (GenEval's metadata and
    ``folder_jsonl`` files alike) or the captions of webdataset shards."""
    if path.endswith(".jsonl"):
        out = []
        for i, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(str(row["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i}: no 'prompt' field in a JSON object ({e})") from e
        return out
    from pairing.config import GenerationSource
    from pairing.datasets import read_generation

    return [it.prompt for it in read_generation(GenerationSource(paths=(path,)), strict=True).items]


def load_heldout(
    und_paths: tuple[str, ...] | list[str],
    gen_paths: tuple[str, ...] | list[str],
    und_items: int = 0,
    gen_prompts: int = 0,
) -> HeldOut:
    """The first ``und_items`` understanding items and ``gen_prompts`` prompts (0: all) of
    the files, read with the training readers (strict: a bad row is an error naming it)."""
    from pairing.config import UnderstandingSource
    from pairing.datasets import decode_image_bytes, question_with_choices, read_understanding

    und = []
    if und_paths:
        u = read_understanding(UnderstandingSource(paths=tuple(und_paths)), strict=True)
        items = u.items[:und_items] if und_items else u.items
        und = [
            (
                decode_image_bytes(it.image, it.image_ref),
                question_with_choices(it.question, it.choices),  # as the training requests
                it.answer,
                it.category,
            )
            for it in items
        ]
    prompts = [p for path in gen_paths for p in read_prompts(path)]
    return HeldOut(und, prompts[:gen_prompts] if gen_prompts else prompts)


def evaluate(model, heldout: HeldOut, s: Settings, seed: int, scorers: dict | None = None) -> dict:
    """Held-out understanding accuracy, greedy and sampled (``s.answer_samples`` per question
    at ``s.text_temperature``), overall and per category; images sampled for the prompts
    (``s.image_samples`` each, CFG ``s.cfg_weight``, T = 1, ``seed``) and scored by
    ``scorers`` (name -> ``fn(images, prompts) -> list[float]``, ``evaluation.scores``).
    The toy judge's scorer adds its terms, the strict success rate (all four terms 1) and
    the number of distinct images per prompt (1 = collapsed onto one image).

    Draws, in this order: greedy answers, sampled answers (``seed``), images (``seed``)."""
    import torch

    from rewards.accuracy import accuracy_reward, extract_choice

    und, prompts = heldout.und, heldout.prompts
    out: dict = {}
    with torch.no_grad():
        if und:
            images_in, questions = [x[0] for x in und], [x[1] for x in und]
            n_ans = s.answer_samples
            t = model.sample_text(
                images_in, questions, n=1, max_new_tokens=s.max_new_tokens, greedy=True
            )
            ts = model.sample_text(
                images_in,
                questions,
                n=n_ans,
                max_new_tokens=s.max_new_tokens,
                temperature=s.text_temperature,
                seed=seed,
            )
            correct = [accuracy_reward(x, q[2], kind="choice") for x, q in zip(t.texts, und)]
            sampled = [
                accuracy_reward(x, und[i // n_ans][2], kind="choice")
                for i, x in enumerate(ts.texts)
            ]  # [Q * n_ans]
            out |= {
                "und_accuracy": float(np.mean(correct)),
                "und_accuracy_sampled": float(np.mean(sampled)),
                "und_answered_sampled": float(
                    np.mean([extract_choice(x) is not None for x in ts.texts])
                ),
                "und_accuracy_by_category": by_category(correct, [x[3] for x in und]),
                "und_accuracy_sampled_by_category": by_category(
                    sampled, [und[i // n_ans][3] for i in range(len(sampled))]
                ),
            }
        if prompts:
            n_img = s.image_samples
            samples = model.sample_image_tokens(
                prompts, n=n_img, cfg_weight=s.cfg_weight, seed=seed
            )
            images = model.decode_images(samples.tokens)  # [P * n, H, W, 3]
            out["images"] = images
            out |= generation_scores(images, prompts, n_img, scorers or {})
    return out


def generation_scores(images, prompts: list[str], n: int, scorers: dict) -> dict:
    """Scores of ``images`` (``n`` per prompt, grouped by prompt): for each scorer its mean,
    std and per-category means (``evaluation.scores.summarize``), and for the toy judge the
    quickstart's measures (``toy_judge_measures``)."""
    from evaluation.scores import summarize, toy_category

    expanded = [prompts[i // n] for i in range(len(images))]
    out: dict = {"gen_scores": {}}
    for name, fn in scorers.items():
        values = fn(images, expanded)
        out["gen_scores"][name] = summarize(values, [toy_category(p) for p in expanded])
        if name == "toy_judge":
            out |= toy_judge_measures(images, prompts, n)
    return out


def toy_judge_measures(images, prompts: list[str], n: int) -> dict:
    """The toy judge's reward (mean, and std over prompts' means), each of its terms, strict
    success overall / per shape / per image, and distinct images per prompt."""
    from rewards.toy import TERMS, judge_details, parse_prompt, reward_of_terms

    details = [judge_details(img, prompts[i // n]) for i, img in enumerate(images)]
    if any(d is None for d in details):
        bad = next(prompts[i // n] for i, d in enumerate(details) if d is None)
        raise ValueError(
            f"eval.gen_scorers has toy_judge but the prompt {bad!r} is outside the toy "
            "world's grammar; drop toy_judge for these prompts"
        )
    rewards = np.array([reward_of_terms(d) for d in details])  # [P * n]
    distinct = [len({im.tobytes() for im in images[i : i + n]}) for i in range(0, len(images), n)]
    return {
        "gen_reward": float(rewards.mean()),
        "gen_reward_prompt_std": float(rewards.reshape(len(prompts), n).mean(1).std()),
        "gen_terms": {k: float(np.mean([d[k] for d in details])) for k in TERMS},
        "gen_strict_success": float(np.mean([d["strict"] for d in details])),
        "gen_strict_by_shape": by_category(
            [d["strict"] for d in details],
            [parse_prompt(prompts[i // n])["shape"] for i in range(len(details))],
        ),
        "gen_strict_by_image": [bool(d["strict"]) for d in details],
        "gen_distinct_per_prompt": float(np.mean(distinct)),
    }


def flat_metrics(result: dict, prefix: str = "eval/") -> dict[str, float]:
    """``evaluate``'s result as flat ``eval/*`` scalars for metrics.jsonl / TensorBoard."""
    out: dict[str, float] = {}
    names = {
        "und_accuracy": "und_accuracy_greedy",
        "und_accuracy_sampled": "und_accuracy_sampled",
        "und_answered_sampled": "und_answered_sampled",
        "gen_strict_success": "gen_strict_success",
        "gen_distinct_per_prompt": "gen_distinct_per_prompt",
    }
    for key, name in names.items():
        if key in result:
            out[prefix + name] = float(result[key])
    for key, name in (
        ("und_accuracy_by_category", "und_accuracy_greedy"),
        ("und_accuracy_sampled_by_category", "und_accuracy_sampled"),
    ):
        for cat, v in result.get(key, {}).items():
            out[f"{prefix}{name}/{cat}"] = float(v)
    for term, v in result.get("gen_terms", {}).items():
        out[f"{prefix}gen_toy_judge/{term}"] = float(v)
    for name, summary in result.get("gen_scores", {}).items():
        out[f"{prefix}gen_{name}_mean"] = summary["mean"]
        out[f"{prefix}gen_{name}_std"] = summary["std"]
    return out
