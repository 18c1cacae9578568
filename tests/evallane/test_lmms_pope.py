"""lmms-eval's own POPE task on a local dataset in POPE's schema, answered by a tiny model
through the ``pairuni`` plugin; the metrics lmms-eval reports against a hand count.

The tiny random model is first taught (a few Adam steps through ``text_logprobs``) to answer
"yes" or "no" per image, so its answers are POPE answers and the accuracy is not trivially
0; the dataset's ground truth disagrees with what it was taught on some items, so the
accuracy is not trivially 1 either. Whatever the model learned, the expected numbers are
counted here from its own greedy answers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pope_fixture import POST_PROMPT, TAUGHT, TRUTH, items, write_pope_parquet

from evaluation.lmms_run import run_lmms
from models.config import ModelConfig
from models.registry import build_policy


def _teach(policy, examples, answers, steps=60):
    """Adam on the answers' teacher-forced NLL (answer tokens + eos)."""
    tok = policy.tokenizer
    ids = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
    images = [x[0] for x in examples]
    questions = [x[1] + POST_PROMPT for x in examples]
    params = list(policy.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=3e-3)
    policy.train()
    torch.manual_seed(0)
    for _ in range(steps):
        lp = policy.text_logprobs(images, questions, ids)
        loss = -(lp.values * lp.mask).sum() / lp.mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()


@pytest.mark.slow
def test_pope_metrics_match_a_hand_count_of_the_models_answers(tmp_path):
    torch.manual_seed(0)
    policy = build_policy(ModelConfig())
    pope_items = items()
    _teach(policy, pope_items, TAUGHT)
    model_dir = tmp_path / "model"
    policy.save(model_dir)

    # the model, loaded back from its directory as lmms-eval's plugin loads it
    reloaded = build_policy(ModelConfig(path=str(model_dir)))
    with torch.no_grad():
        ours = reloaded.sample_text(
            [x[0] for x in pope_items],
            [x[1] + POST_PROMPT for x in pope_items],
            n=1,
            max_new_tokens=8,
            greedy=True,
        ).texts
    preds = [t.strip().lower() for t in ours]
    assert sum(p in ("yes", "no") for p in preds) >= 6, preds  # the teaching took

    data = tmp_path / "pope_test.parquet"
    write_pope_parquet(data, pope_items)
    report = run_lmms(
        reloaded, ["pope"], tmp_path / "out", data={"pope": str(data)}, max_new_tokens=8
    )
    pope = report["pope"]
    assert pope["task"] == "pope_local" and pope["local"]
    assert (tmp_path / "out" / "tasks" / "pope_local.yaml").is_file()
    # lmms-eval saw the same answers the model gives directly
    logged = {int(s["doc_id"]): s["answer"] for s in pope["samples"]}
    assert [logged[i].strip() for i in range(len(pope_items))] == [t.strip() for t in ours]

    # hand count (POPE's rules: the lower-cased, stripped answer equals the truth)
    tp = sum(p == "yes" and t == "yes" for p, t in zip(preds, TRUTH))
    fp = sum(p == "yes" and t == "no" for p, t in zip(preds, TRUTH))
    fn = sum(p == "no" and t == "yes" for p, t in zip(preds, TRUTH))
    acc = sum(p == t for p, t in zip(preds, TRUTH)) / len(TRUTH)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    m = pope["metrics"]
    assert 0.0 < acc < 1.0, preds  # neither trivially wrong nor trivially right
    assert m["pope_accuracy"] == pytest.approx(acc)
    assert m["pope_precision"] == pytest.approx(precision)
    assert m["pope_recall"] == pytest.approx(recall)
    assert m["pope_f1_score"] == pytest.approx(f1)
    assert m["pope_yes_ratio"] == pytest.approx(TRUTH.count("yes") / len(TRUTH))
    json.dumps(report)  # what `pairuni eval` writes


def test_lmms_eval_finds_the_pairuni_model_through_its_entry_point():
    # `lmms_eval --model pairuni` resolves the name through the same registry
    from lmms_eval.models import get_model

    from evaluation.lmms_model import PairUniLMM

    assert get_model("pairuni") is PairUniLMM


def test_images_of_a_request_become_one_image_and_answers_stop_at_until():
    from PIL import Image

    from evaluation.lmms_model import cut_at_stops, one_image

    a = Image.new("RGB", (10, 20), "red")
    b = Image.new("RGB", (40, 40), "blue")  # scaled to height 20: 20 wide
    joined = one_image([a, b], 64)
    assert joined.shape == (20, 30, 3)
    assert tuple(joined[0, 0]) == (255, 0, 0) and tuple(joined[0, 29]) == (0, 0, 255)
    assert one_image([], 64).shape == (64, 64, 3) and one_image([], 64).min() == 255
    assert cut_at_stops("yes\n\nUSER: more", ["\n\n", "USER:"]) == "yes"
    assert cut_at_stops("no stop here", []) == "no stop here"


@pytest.mark.slow
def test_loglikelihood_is_the_continuations_summed_logprob_and_says_if_greedy():
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from evaluation.lmms_model import PairUniLMM

    policy = build_policy(ModelConfig())
    lm = PairUniLMM(policy=policy)
    image = Image.new("RGB", (64, 64), "red")
    lm.task_dict = {"toy": {"test": [{"image": image}]}}
    question = "Is there a red object in the image?"
    tok = policy.tokenizer
    greedy = policy.sample_text([np.asarray(image)], [question], n=1, max_new_tokens=3, greedy=True)
    ids = [int(t) for t in greedy.token_ids[0][:3] if int(t) != tok.eos_token_id]
    greedy_text = tok.decode(ids)
    assert tok(greedy_text, add_special_tokens=False)["input_ids"] == ids  # round trip
    other = " blue" if greedy_text != " blue" else " red"

    def req(cont):
        args = (f"<image>{question}", cont, lambda doc: [doc["image"]], 0, "toy", "test")
        return Instance(
            request_type="loglikelihood",
            arguments=args,
            idx=0,
            metadata={"task": "toy", "doc_id": 0, "repeats": 1},
        )

    (lp_g, is_g), (lp_o, is_o) = lm.loglikelihood([req(greedy_text), req(other)])
    assert is_g and not is_o
    for cont, lp in ((greedy_text, lp_g), (other, lp_o)):
        t = tok(cont, add_special_tokens=False)["input_ids"]
        direct = policy.text_logprobs([np.asarray(image)], [question], [t])
        assert lp == pytest.approx(float((direct.values * direct.mask).sum()), abs=1e-5)
