"""Pairs -> requests and rewards -> advantages, the plain-data half of a training step."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from actors.types import Rollout
from deploy.dataflow import (
    advantages,
    build_requests,
    diversity_metrics,
    reward_metrics,
    simpo_pairs,
    task_rewards,
)
from pairing.manifest import Pair


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


IMAGES = {"img:red": _png((255, 0, 0)), "img:bad": b"not an image"}


def _pair(
    pid, kind="aligned", sim=1.0, question="what colour?", prompt="a red square", image="img:red"
):
    return Pair(
        pair_id=pid,
        kind=kind,
        similarity=sim,
        weight=math.sqrt(sim) if kind == "retrieved" else 1.0,
        und_image=image,
        question=question,
        choices=("red", "blue") if question else (),
        answer="A" if question else None,
        category="colour",
        und_source="toy",
        verifier=None,
        gen_image=image,
        prompt=prompt,
        needs_augmentation=None
        if question and prompt
        else ("understanding" if not question else "generation"),
    )


def test_requests_per_half_with_unique_ids_and_stable_seeds():
    pairs = [
        _pair(10),
        _pair(11, "retrieved", 0.64),
        _pair(12, question=None),
        _pair(13, prompt=None),
    ]
    und, gen = build_requests(
        pairs, step=3, seed=0, group_sizes=(4, 2), load_image=IMAGES.__getitem__
    )
    assert [r.pair_id for r in und] == [10, 11, 13] and [r.pair_id for r in gen] == [10, 11, 12]
    assert {r.n for r in und} == {4} and {r.n for r in gen} == {2}  # per-task group sizes
    ids = [r.request_id for r in und + gen]
    assert len(set(ids)) == len(ids)
    assert und[0].prompt.endswith("B. blue\nAnswer with the option's letter.")
    assert und[0].image.shape == (8, 8, 3) and tuple(und[0].image[0, 0]) == (255, 0, 0)
    assert und[1].pair_weight == pytest.approx(0.8) and und[1].pair_kind == "retrieved"
    again, _ = build_requests(
        pairs, step=3, seed=0, group_sizes=(4, 2), load_image=IMAGES.__getitem__
    )
    assert [r.seed for r in again] == [r.seed for r in und]
    later, _ = build_requests(
        pairs, step=4, seed=0, group_sizes=(4, 2), load_image=IMAGES.__getitem__
    )
    assert [r.seed for r in later] != [r.seed for r in und]


def test_undecodable_image_names_the_pair():
    with pytest.raises(ValueError, match="pair 7 und_image"):
        build_requests([_pair(7, image="img:bad")], 0, 0, (2, 2), IMAGES.__getitem__)


def _rollouts(pairs, rewards_und, rewards_gen, G=2):
    und, gen = build_requests(pairs, 0, 0, (G, G), IMAGES.__getitem__)
    out = []
    for reqs, rewards, term in ((und, rewards_und, "accuracy"), (gen, rewards_gen, "hps")):
        k = 0
        for req in reqs:
            for s in range(G):
                out.append(
                    Rollout(
                        req,
                        s,
                        np.zeros(1, np.int64),
                        np.zeros(1, np.float32),
                        0,
                        rewards={term: rewards[k]},
                    )
                )
                k += 1
    return out


def test_pair_grpo_advantages_end_to_end_by_hand():
    # one aligned pair (w = 1) and one retrieved pair with s = 0.25 (w = 0.5); G = 2.
    # und rewards (1, 0): mean 0.5, sample std sqrt(0.5): A = +-0.5/0.7071 = +-0.7071
    pairs = [_pair(0), _pair(1, "retrieved", 0.25)]
    rs = _rollouts(pairs, [1.0, 0.0, 1.0, 0.0], [0.3, 0.3, math.nan, 0.2])
    und_r = task_rewards(
        [r for r in rs if r.task == "und"], {"accuracy": 1.0}, "sum_then_normalise"
    )
    gen_r = task_rewards([r for r in rs if r.task == "gen"], {"hps": 1.0}, "sum_then_normalise")
    r = torch.cat([und_r, gen_r])
    adv = advantages(rs, r, "pair_grpo", eps=0.0, scale="group")
    a = 0.5 / math.sqrt(0.5)
    # gen pair 0 rewards are equal -> 0; gen pair 1 has a NaN -> a group of one -> 0
    torch.testing.assert_close(
        adv, torch.tensor([a, -a, 0.5 * a, -0.5 * a, 0, 0, 0, 0], dtype=adv.dtype)
    )
    flat = advantages(rs, r, "grpo", eps=0.0, scale="group")  # the paper's "w/o sim"
    assert float(flat[2]) == pytest.approx(a)
    m = reward_metrics(rs, r)
    assert m["reward/und_mean"] == 0.5 and m["reward_term/hps_nan"] == 1.0
    assert m["reward/und/retrieved_mean"] == 0.5


def test_reward_details_and_diversity_are_logged_per_step():
    rs = _rollouts([_pair(0), _pair(1)], [1.0, 0.0, 1.0, 1.0], [0.2, 0.0, 1.0, 1.0])
    gen = [r for r in rs if r.task == "gen"]
    # the toy judge's parts on the 4 images: position 1, 0, 1, 1 -> mean 0.75
    for r, pos in zip(gen, (1.0, 0.0, 1.0, 1.0)):
        r.reward_details = {"toy_judge/position": pos, "toy_judge/strict": pos * (r.pair_id)}
    m = reward_metrics(rs, torch.zeros(len(rs), dtype=torch.float64))
    assert m["reward_detail/toy_judge/position_mean"] == 0.75
    assert m["reward_detail/toy_judge/strict_mean"] == 0.5  # pair 1's two images only
    # distinct samples per request: und pair 0 draws (3, 4), pair 1 (5, 5); gen all the same
    for r, tok in zip(rs, ([3], [4], [5], [5], [7], [7], [7], [7])):
        r.token_ids = np.asarray(tok, np.int64)
    d = diversity_metrics(rs)
    assert d == {"rollout/und_distinct_per_request": 1.5, "rollout/gen_distinct_per_request": 1.0}


def test_simpo_pairs_best_and_worst_per_group():
    rs = _rollouts([_pair(0)], [1.0, 0.0], [0.1, 0.9])
    r = torch.tensor([1.0, 0.0, 0.1, 0.9], dtype=torch.float64)
    chosen, rejected = simpo_pairs(rs, r)
    assert sorted(zip(chosen.tolist(), rejected.tolist())) == [(0, 1), (3, 2)]


def test_unreachable_reward_endpoint_gives_nan_and_stops_the_step():
    import socket

    from deploy.train import check_failures, score
    from rewards.client import RewardClient
    from rewards.config import RewardsConfig

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RewardsConfig(
        port=port,
        client_mode="http",
        client_timeout_s=1.0,
        client_max_retries=1,
        client_backoff_s=0.01,
    )
    clients = {"accuracy": RewardClient("accuracy", cfg)}
    rs = _rollouts([_pair(0)], [0.0, 0.0], [0.0, 0.0])
    und = [r for r in rs if r.task == "und"]
    for r in und:
        r.text = "A"
        r.rewards.clear()
    score(und, {"accuracy": 1.0}, clients)
    assert all(math.isnan(r.rewards["accuracy"]) for r in und)  # never 0.0
    rewards = task_rewards(und, {"accuracy": 1.0}, "sum_then_normalise")
    check_failures(rewards, 1.0, clients, step=5)  # at the limit: goes on
    with pytest.raises(
        RuntimeError, match=rf"step 5: 100% of rewards failed.*accuracy at http://127.0.0.1:{port}"
    ):
        check_failures(rewards, 0.5, clients, step=5)


def test_options_are_listed_once():
    from deploy.dataflow import question_with_choices

    # an augmented / synthetic question has plain option texts: they are appended
    q = question_with_choices("What colour?", ("red", "blue"))
    assert q == "What colour?\nA. red\nB. blue\nAnswer with the option's letter."
    # a dataset question already lists them (the reader parsed its choices from it)
    listed = "Which colour is shown?\nA. red\nB. green"
    assert question_with_choices(listed, ("red", "green")) == listed
    assert question_with_choices("What is 2+2?", ()) == "What is 2+2?"


def _single(pid, kind):
    """A DSR item as the unpaired manifest writes it (pairing.manifest, kind und_only /
    gen_only)."""
    und = kind == "und_only"
    return Pair(
        pair_id=pid,
        kind=kind,
        similarity=1.0,
        weight=1.0,
        und_image="img:red" if und else None,
        question="" if und else None,
        choices=(),
        answer=None,
        category="caption" if und else "color",
        und_source="coco" if und else None,
        verifier=None,
        gen_image=None,
        prompt=None if und else "a red cube on a blue table",
        needs_augmentation=None,
        task_kind="caption" if und else None,
        gen_source=None if und else "t2i_compbench",
    )


def test_single_task_items_give_their_one_request():
    from models.prompts import DESCRIBE_QUESTION

    items = [_single(0, "und_only"), _single(1, "gen_only"), _pair(2)]
    und, gen = build_requests(items, 3, 0, (4, 2), IMAGES.__getitem__)
    # the captioning item: the describe question, no reference answer, its own group
    assert [r.pair_id for r in und] == [0, 2] and [r.pair_id for r in gen] == [1, 2]
    cap = und[0]
    assert cap.prompt == DESCRIBE_QUESTION and cap.answer is None and cap.choices is None
    assert cap.answer_kind == "caption" and cap.n == 4 and cap.pair_kind == "und_only"
    assert cap.image.shape == (8, 8, 3) and cap.pair_weight == 1.0
    assert gen[0].prompt == "a red cube on a blue table" and gen[0].n == 2
    assert und[1].answer == "A" and und[1].answer_kind == "choice"  # pairs are unchanged


def test_caption_rollouts_are_scored_by_dual_and_not_by_accuracy(tmp_path):
    from deploy.train import caption_problems
    from pairing.manifest import write_manifest
    from rewards.spec import request_items

    und, _ = build_requests([_single(0, "und_only")], 0, 0, (1, 1), IMAGES.__getitem__)
    r = Rollout(und[0], 0, np.ones(3, np.int64), np.zeros(3, np.float32), 0, text="a red cat")
    assert request_items("accuracy", [r]) == ([], [])  # nothing to check: no reference
    kept, items = request_items("dual", [r])
    assert kept == [r] and len(items) == 1
    path = tmp_path / "m.parquet"
    write_manifest([_single(0, "und_only"), _single(1, "gen_only")], path)
    assert caption_problems(str(path), {"dual": 1.0}) == []
    (msg,) = caption_problems(str(path), {"accuracy": 1.0, "dual": 1.0})
    assert "['accuracy']" in msg and "1 captioning items" in msg and "train.und_rewards" in msg
    write_manifest([_pair(0)], path)
    assert caption_problems(str(path), {"accuracy": 1.0}) == []


def test_one_task_alone_gets_only_its_requests():
    # DSR section 4.5: understanding or generation trained alone (train.tasks)
    items = [_pair(0), _single(1, "und_only"), _single(2, "gen_only")]
    und, gen = build_requests(items, 0, 0, (2, 2), IMAGES.__getitem__, tasks=("gen",))
    assert und == [] and [r.pair_id for r in gen] == [0, 2]
    und, gen = build_requests(items, 0, 0, (2, 2), IMAGES.__getitem__, tasks=("und",))
    assert gen == [] and [r.pair_id for r in und] == [0, 1]


def test_train_tasks_pick_the_terms_and_endpoints():
    from deploy.config import RunConfig
    from deploy.resources import demands
    from models.config import ConfigError, load_config

    gen_only = load_config(
        RunConfig,
        None,
        ["train.tasks=[gen]", "rewards.endpoints=[hps]", "train.und_rewards={accuracy: 1.0}"],
    )  # accuracy is not listed: fine, understanding is not trained
    assert gen_only.train.terms == {"hps": 1.0} and gen_only.train.rewards("und") == {}
    assert [d.role for d in demands(gen_only) if d.role.startswith("reward")] == [
        "reward endpoint hps"
    ]
    with pytest.raises(ConfigError, match=r"train\.tasks"):
        load_config(RunConfig, None, ["train.tasks=[caption]"])
    with pytest.raises(ConfigError, match=r"train\.tasks"):
        load_config(RunConfig, None, ["train.tasks=[]"])
    with pytest.raises(ConfigError, match=r"train\.gen_rewards.*train\.tasks trains gen"):
        load_config(RunConfig, None, ["train.tasks=[gen]", "train.gen_rewards={}"])
