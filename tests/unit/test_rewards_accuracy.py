"""Accuracy reward: each extraction rule on real-looking responses, math and text answers."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from rewards.accuracy import KINDS, accuracy_reward, extract_choice, gold_letter

COLORS = {"A": "red", "B": "blue", "C": "green", "D": "light blue"}


@pytest.mark.parametrize(
    ("response", "choices", "want"),
    [
        # Level 3, a short response on its own: the letter forms models write.
        ("B", None, "B"),
        ("(B)", None, "B"),
        ("B.", None, "B"),
        ("B)", None, "B"),
        ("b", None, "B"),
        (" (c) ", None, "C"),
        ("B. blue", COLORS, "B"),
        # Level 2, answer phrases, with reasoning around them.
        ("Answer: B", None, "B"),
        ("the answer is b", None, "B"),
        ("**Answer:** C", COLORS, "C"),
        ("The car is parked under a tree, so the shade is cool. The answer is (C).", COLORS, "C"),
        ("The final answer is (C). Because A and B are both wrong.", None, "C"),
        ("Answer: B because the sky scatters short wavelengths and red is wrong", COLORS, "B"),
        ("The correct option is blue.", COLORS, "B"),
        ("After checking each option, I'd say the answer is option D", COLORS, "D"),
        # "a" is the article here, so the option text "cat" decides.
        ("The answer is a cat.", {"A": "dog", "B": "cat"}, "B"),
        # Level 1, containers, which outrank the reasoning before them.
        ("<answer>B</answer>", None, "B"),
        ("Option A is red, which is wrong. <answer>B</answer>", COLORS, "B"),
        ("<answer>The answer is D</answer>", None, "D"),
        (r"So we get \boxed{B}.", None, "B"),
        (r"$\boxed{\text{C}}$", None, "C"),
        # Option text instead of the letter; the longer option text wins over its substring.
        ("blue", COLORS, "B"),
        ("Looking closely, it must be light blue.", COLORS, "D"),
        ("The ball in the picture is green", ["red", "blue", "green"], "C"),
        # Level 4, free-text references.
        ("Looking at the chart the tallest bar belongs to (B) in 2019", None, "B"),
        ("I would go with choice C here since the others are smaller", None, "C"),
    ],
)
def test_extract_choice_reads_what_models_write(response, choices, want):
    assert extract_choice(response, choices) == want


@pytest.mark.parametrize(
    ("response", "choices"),
    [
        ("A or B", None),  # a list of letters commits to both
        (r"\boxed{A} and \boxed{B}", None),  # two containers, two options
        ("B. red", COLORS),  # the letter says B, its text says A
        ("<answer>A, B</answer>", None),
        ("I am not sure.", None),  # "I" + lower-case word is the pronoun
        ("", None),
        ("It could be (A) or (C).", None),
        ("Answer: E", COLORS),  # E is not an option of this question
    ],
)
def test_extract_choice_none_for_two_options_or_none(response, choices):
    assert extract_choice(response, choices) is None


def test_choice_reward_scores_letters_and_option_texts():
    # Reference as a letter or as the option's text names the same option.
    assert accuracy_reward("The answer is (B).", "B", choices=COLORS) == 1.0
    assert accuracy_reward("The answer is (B).", "blue", choices=COLORS) == 1.0
    assert accuracy_reward("The answer is (A).", "B", choices=COLORS) == 0.0
    assert accuracy_reward("It is blue or red", "B", choices=COLORS) == 0.0  # two options
    assert gold_letter("(c)", None) == "C"
    with pytest.raises(ValueError, match="neither one of the letters"):
        gold_letter("purple", COLORS)


@pytest.mark.parametrize(
    ("response", "answer", "want"),
    [
        (r"Adding the halves gives $\frac{1}{2}$.", "0.5", 1.0),  # 1/2 == 0.5
        (r"Therefore $x = \boxed{2^{1/2}}$", r"$\sqrt{2}$", 1.0),  # equivalent expressions
        ("We get 10.0 apples in total.", "10", 1.0),  # number with tolerance
        (r"The result is \boxed{3.1415926}", "3.14159265", 1.0),  # equal to 6 decimals
        ("The answer is 4.", "3", 0.0),
        ("I cannot solve this.", "7", 0.0),  # nothing to parse
    ],
)
def test_math_reward_uses_math_verify(response, answer, want):
    assert accuracy_reward(response, answer, kind="math") == want


def test_math_reward_works_off_the_main_thread():
    # math_verify's default signal.alarm timeouts raise outside the main thread; Serve runs
    # handlers in threads, so the reward must work there.
    got = []
    t = threading.Thread(target=lambda: got.append(accuracy_reward(r"\boxed{6}", "6", kind="math")))
    t.start()
    t.join()
    assert got == [1.0]


def test_text_reward_compares_normalised_answer_spans():
    # Normalised: lower case, punctuation and articles removed -> "eiffel tower" both sides.
    assert accuracy_reward("The Eiffel Tower!", "eiffel tower", kind="text") == 1.0
    assert accuracy_reward("Let me look. Answer: Paris", "Paris", kind="text") == 1.0
    assert accuracy_reward("<answer>paris</answer>", "Paris", kind="text") == 1.0
    assert accuracy_reward("The capital is Paris.", "Paris", kind="text") == 0.0


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"\['choice', 'math', 'text'\]"):
        accuracy_reward("B", "B", kind="exact")
    assert sorted(KINDS) == ["choice", "math", "text"]


def test_scoring_modules_do_not_import_ray():
    code = (
        "import sys, rewards.accuracy, rewards.hps, rewards.types, rewards.dual; "
        "print(sorted(m for m in ('ray', 'deepspeed', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_boxed_contents_in_one_pass():
    from rewards.accuracy import _boxed_contents

    assert _boxed_contents(r"\boxed{a{b}c} and \boxed{d}") == ["a{b}c", "d"]
    assert _boxed_contents(r"\boxed{\boxed{x}}") == [r"\boxed{x}", "x"]  # outer first
    assert _boxed_contents(r"\boxed{open \boxed{B} {") == ["B"]  # the unclosed one is skipped


def test_longest_option_mention_wins_and_ties_stay_ambiguous():
    from rewards.accuracy import _text_mentions

    texts = {"A": "blue", "B": "light blue", "C": "red"}
    assert _text_mentions("It is light blue.", texts) == {"B"}
    assert _text_mentions("light blue or red", texts) == {"B", "C"}
    assert _text_mentions("blue, then light blue", texts) == {"A", "B"}
    assert _text_mentions("x", {"A": "same", "B": "same"}) == set()
    assert _text_mentions("the same", {"A": "same", "B": "same"}) == {"A", "B"}


def test_adversarial_responses_read_as_before():
    # the shapes bench.extraction times: each still reads what it says
    assert extract_choice("answer" + " " * 5000 + "is B", ["red", "blue"]) == "B"
    assert extract_choice("the answer is " * 500) is None
    assert extract_choice(r"\boxed{" * 500 + "B") is None  # no closed box, no other rule
    assert extract_choice("B" + "\n" * 5000 + "x") == "B"  # alone on its first line
    # an answer span is at most SPAN_MAX_CHARS: the letter after 400 filler words is not in it
    assert extract_choice("The answer is " + "very " * 400 + "B.", ["red", "blue"]) is None


COLOURS4 = ["red", "blue", "green", "yellow"]


@pytest.mark.parametrize(
    ("response", "want"),
    [
        # answer phrasings
        ("I choose D.", "D"),
        ("I'd go with C because the others are darker.", "C"),
        ("I think B.", "B"),
        ("Answer - C", "C"),
        ("Answer – C", "C"),
        ('{"answer": "C"}', "C"),
        ("Correct: A", "A"),
        ("### Answer\n**B**", "B"),
        ("## Final answer\n(D)", "D"),
        ("So the answer must be C.", "C"),
        # wrapping and Unicode
        ("`B`", "B"),
        ("The answer is “C”.", "C"),
        ("【C】", "C"),
        ("答案：（C）", "C"),
        ("Ｂ", "B"),
        ("B．", "B"),
        ("Answer:\u200b B", "B"),
        ("Ⓑ", "B"),
        ("𝐁", "B"),
        ("✅ B", "B"),
        ("答案：Ｄ", "D"),
        # other languages
        ("答案是B", "B"),
        ("La respuesta correcta es la B", "B"),
        ("Die richtige Antwort ist C", "C"),
        ("Ответ: D", "D"),
        ("正解は A です", "A"),
        ("정답은 B입니다", "B"),
        ("La bonne réponse est C.", "C"),
        # conclusions at the end of reasoning, with the option list quoted before them
        ("The sky is clear and bright in the image. So B.", "B"),
        ("A. red\nB. blue\nC. green\nD. yellow\nThe shape matches the sky. Hence (B).", "B"),
        ("Options:\nA. red\nB. blue\nC. green\nD. yellow\nIt looks like option C.", "C"),
        ("Red is too warm and yellow too light, so it must be green.", "C"),
        # negation that leaves one option
        ("It is not red, so it must be blue.", "B"),
        ("It's B (not D).", "B"),
        ("Not A but C.", "C"),
        ("The sky is blue, not red.", "B"),
        # a letter alone on the first line
        ("B\nThe sky scatters short wavelengths.", "B"),
        ("(C)\nBecause green is the only match.", "C"),
        ("**D**\nYellow is what the image shows.", "D"),
    ],
)
def test_extraction_families(response, want):
    assert extract_choice(response, COLOURS4) == want


@pytest.mark.parametrize(
    "response",
    [
        "A or B",  # hedges stay unanswered
        "Maybe (A), maybe (C).",
        "A. red\nB. blue\nC. green\nD. yellow",  # the options alone are no answer
        "It is not red.",  # negation naming no remaining option
        "Not A.",
        "I am not sure which one it is.",
        "A cat sat there, I think.",  # article and pronoun
        "答案是B或C",  # two options in Chinese
        "B\ufffd",  # a byte the tokenizer could not decode is not a delimiter
        "B\ufffdD",
    ],
)
def test_extraction_stays_unanswered_when_ambiguous(response):
    assert extract_choice(response, COLOURS4) is None
