"""The augmentation prompts' roles (PairUni Figs. 10 and 11, section 2.1.1) and the one-reply
JSON form they share: the packaged v2 templates, and hand-written model replies parsed,
accepted or rejected with the item and the problem named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pairing.config import VARIANTS, AugmentConfig
from pairing.quadruples import ReplyError, validate_reply
from pairing.templates import load_template

CFG = AugmentConfig(model="scripted")
DETAIL = (
    "a red ceramic mug with a chipped rim stands left of a small blue teapot on a wooden "
    "kitchen table, soft morning light from a window behind them, warm photographic style"
)
REPLY = {
    "question": "What colour and shape is the object to the left of the teapot?",
    "choices": {"A": "a red mug", "B": "a red bowl", "C": "an orange mug", "D": "a red jug"},
    "answer": "A",
    "detail_prompt": DETAIL,
}
ITEM = "gen-0123 (g.tar#000.png)"


def test_defaults_follow_the_papers_roles():
    cfg = AugmentConfig()
    cap, qa = load_template(cfg.caption_template), load_template(cfg.qa_template)
    # Fig. 11 (understanding prompt) completes U's items with C; it takes no image class.
    assert (cap.name, cap.version, cap.task, cap.reply) == ("caption", 2, "caption", "quadruple")
    assert cap.variants == {} and "Figure 11" in Path(cap.path).read_text()
    # Fig. 10 (generation prompt) completes G's items with Q, A; one hint per image class.
    assert (qa.name, qa.version, qa.task, qa.reply) == ("qa", 2, "qa", "quadruple")
    assert sorted(qa.variants) == sorted(VARIANTS) and "Figure 10" in Path(qa.path).read_text()
    for tpl in (cap, qa):
        text = tpl.user_text("text", "CONTEXT")
        assert "CONTEXT" in text and "yes/no" in text and "look-alike" in text
        for key in ('"question"', '"choices"', '"answer"', '"detail_prompt"'):
            assert key in text and key in tpl.repair_text("x")
    assert "two or more" in qa.variants["one_object"]
    assert "look or sound like" in qa.variants["text"]
    assert qa.variants["text"] in qa.user_text("text", "a sign")
    # The legacy templates still load (their cached answers stay addressable).
    assert load_template("caption_v1").reply == load_template("qa_v1").reply == "task"


def test_template_without_variants_must_not_ask_for_a_hint(tmp_path):
    src = yaml.safe_load(Path(load_template("caption_v2").path).read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**src, "instruction": src["instruction"] + "{variant_hint}"}))
    with pytest.raises(ValueError, match=r"bad.yaml: template key 'instruction'.*variant_hint"):
        load_template(str(bad))
    bad.write_text(yaml.safe_dump({**src, "reply": "both"}))
    with pytest.raises(ValueError, match=r"template key 'reply': 'both' is not one of"):
        load_template(str(bad))


def test_quadruple_reply_for_each_side():
    choices = ["a red mug", "a red bowl", "an orange mug", "a red jug"]
    qa = validate_reply("qa", json.dumps(REPLY), CFG, reply="quadruple", item=ITEM)
    assert qa == {
        "question": REPLY["question"],
        "choices": choices,
        "answer": "A",
        "generated_prompt": DETAIL,
    }
    cap = validate_reply("caption", json.dumps(REPLY), CFG, reply="quadruple", item=ITEM)
    assert cap == {
        "prompt": DETAIL,
        "generated_qa": {"question": REPLY["question"], "choices": choices, "answer": "A"},
    }
    # The figures' own key, with a space, and a fenced reply.
    paper = {k: v for k, v in REPLY.items() if k != "detail_prompt"} | {"detail prompt": DETAIL}
    fenced = "```json\n" + json.dumps(paper, indent=1) + "\n```"
    assert validate_reply("caption", fenced, CFG, reply="quadruple")["prompt"] == DETAIL


def _without(key):
    return {k: v for k, v in REPLY.items() if k != key}


BAD = [
    ("Here you go: " + json.dumps(REPLY), "not one JSON object"),
    ('{"question": "What colour?", "choices": {"A": "red"', "not one JSON object"),
    ("", "the reply is empty"),
    (json.dumps(_without("detail_prompt")), "missing keys ['detail_prompt']"),
    (json.dumps(REPLY | {"detail prompt": DETAIL}), "give the detail prompt once"),
    (json.dumps(_without("choices") | {"options": REPLY["choices"]}), "extra keys ['options']"),
    (json.dumps(REPLY | {"choices": ["a", "b", "c", "d"]}), "'choices' must be an object"),
    (
        json.dumps(REPLY | {"choices": {"A": "Yes", "B": "No", "C": "maybe", "D": "never"}}),
        "yes/no",
    ),
    (json.dumps(REPLY | {"choices": {**REPLY["choices"], "D": "A red mug."}}), "distinct"),
    (json.dumps(REPLY | {"answer": "E"}), "one of the letters"),
    (json.dumps(REPLY | {"detail_prompt": "a mug"}), "'detail_prompt' has 2 words"),
    (json.dumps(REPLY | {"question": "Which? A. mug B. jug"}), "contains the options"),
]


@pytest.mark.parametrize(("reply", "why"), BAD, ids=[b[1] for b in BAD])
def test_bad_replies_name_the_item_and_the_problem(reply, why):
    for task in ("caption", "qa"):
        with pytest.raises(ReplyError, match=re.escape(why)) as e:
            validate_reply(task, reply, CFG, reply="quadruple", item=ITEM)
        assert str(e.value).startswith(f"item {ITEM}: ")
        assert why in e.value.problem and ITEM not in e.value.problem  # repair text: no id


def test_legacy_form_unchanged():
    legacy = {"question": "Q?", "options": {"A": "r", "B": "g", "C": "b", "D": "y"}, "answer": "B"}
    assert validate_reply("qa", json.dumps(legacy), CFG)["choices"] == ["r", "g", "b", "y"]
    with pytest.raises(ReplyError, match="extra keys"):
        validate_reply("qa", json.dumps(REPLY), CFG)  # the v1 form is strict about keys
