"""Math answers: the reference parsed as one expression, every check under a hard limit."""

from __future__ import annotations

import math
import threading
import time

import pytest

from rewards.accuracy import accuracy_reward
from rewards.mathcheck import MathChecker, parse_gold


@pytest.fixture(scope="module")
def checker():
    c = MathChecker(workers=2, timeout_s=3.0)
    yield c
    c.close()


@pytest.mark.parametrize(
    "gold, want",
    [
        ("2x", "2*x"),  # the default extraction read 2
        ("3x+2", "3*x + 2"),  # ... read 3
        ("2\\pi", "2*pi"),  # ... read 2
        ("x=2", "Eq(x, 2)"),
        ("(0,1]", "Interval.Lopen(0, 1)"),
        ("\\{1,2\\}", "{1, 2}"),
        ("$2x$", "2*x"),  # already in a math environment: as written
    ],
)
def test_gold_is_parsed_whole(gold, want):
    assert str(parse_gold(gold)[0]) == want


@pytest.mark.parametrize(
    "response, gold, want",
    [
        # a number that starts the reference is not the reference
        (r"\boxed{2}", "2x", 0.0),
        (r"\boxed{3}", "3x+2", 0.0),
        (r"\boxed{2}", r"2\pi", 0.0),
        (r"\boxed{3}", r"2 \cdot 3", 0.0),
        # equal expressions in other forms
        (r"\boxed{2x}", "2x", 1.0),
        (r"\boxed{2\pi}", r"2\pi", 1.0),
        (r"\boxed{6}", r"2 \cdot 3", 1.0),
        (r"\boxed{3x+2}", "2+3x", 1.0),
        (r"The answer is $\frac{1}{2}$.", "0.5", 1.0),
        # sets, intervals, equations, units
        (r"\boxed{\{2, 1\}}", r"\{1,2\}", 1.0),
        (r"\boxed{\{1, 3\}}", r"\{1,2\}", 0.0),
        (r"\boxed{(0,1]}", "(0,1]", 1.0),
        (r"\boxed{[0,1]}", "(0,1]", 0.0),
        (r"\boxed{x=2}", "x=2", 1.0),
        (r"\boxed{x=3}", "x=2", 0.0),
        (r"\boxed{5}", r"5 \text{ cm}", 1.0),
        (r"\boxed{5\text{ cm}}", r"5 \text{ cm}", 1.0),
        (r"\boxed{6}", r"5 \text{ cm}", 0.0),
        # nothing readable
        ("I do not know.", "2x", 0.0),
    ],
)
def test_answers_score_as_a_grader_would(checker, response, gold, want):
    assert checker.score(response, gold) == want


def test_a_hanging_check_is_a_failed_reward_and_others_go_on(checker):
    fails = checker.failures["timeout"]
    hung: list[float] = []
    t0 = time.perf_counter()
    th = threading.Thread(target=lambda: hung.append(checker.score(r"\boxed{9^{9^{9^{9}}}}", "1")))
    th.start()
    time.sleep(0.3)  # the tower is being evaluated in one worker ...
    t1 = time.perf_counter()
    assert checker.score(r"\boxed{2x}", "2x") == 1.0  # ... the other answers at once
    assert time.perf_counter() - t1 < 1.0
    th.join()
    assert math.isnan(hung[0])  # a failed reward, not a wrong answer
    assert 3.0 <= time.perf_counter() - t0 < 6.0  # the limit, plus a worker's restart
    assert checker.failures["timeout"] == fails + 1
    # the killed worker was replaced: the pool still has two
    assert checker.score(r"\boxed{1}", "1") == 1.0 and len(checker._all) == 2


def test_deep_nesting_is_bounded(checker):
    deep = r"\boxed{" + "(" * 300 + "1" + ")" * 300 + "}"
    t0 = time.perf_counter()
    got = checker.score(deep, "1")
    assert time.perf_counter() - t0 < 6.0
    assert got == 1.0 or math.isnan(got)


def test_accuracy_reward_goes_through_the_bounded_checker():
    assert accuracy_reward(r"\boxed{2}", "2x", kind="math") == 0.0
    assert accuracy_reward(r"\boxed{2x}", "2x", kind="math") == 1.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="workers=0"):
        MathChecker(workers=0)
