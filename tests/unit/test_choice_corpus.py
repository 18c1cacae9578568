"""bench/choice_corpus.py: the labelled families extract_choice is held to."""

from __future__ import annotations

from bench.choice_corpus import TEMPLATES, cases
from rewards.accuracy import extract_choice


def test_corpus_spans_every_family_and_position():
    corpus = cases()
    assert len(corpus) >= 300
    families = {f for f, _, _ in TEMPLATES}
    assert {c.family for c in corpus} == families
    for family in families - {"ambiguous"}:
        assert {c.label for c in corpus if c.family == family} == set("ABCD"), family
    assert all(c.label is None for c in corpus if c.family == "ambiguous")


def test_extract_choice_agrees_with_every_label():
    wrong = [
        (c.response, c.choices, c.label, got)
        for c in cases()
        if (got := extract_choice(c.response, c.choices)) != c.label
    ]
    assert not wrong, wrong[:5]
