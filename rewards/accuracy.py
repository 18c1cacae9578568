"""Accuracy reward: 1.0 when a response's answer matches the reference, else 0.0.

Pure Python (plus ``math-verify`` for math answers); no ray, no torch. The serving layer
(``rewards/serve.py``) validates requests before they reach these functions.

Choice extraction (``extract_choice``) reads what models really write. The valid letters are
the keys of ``choices`` (a dict letter -> option text), ``A, B, C, ...`` for a list of option
texts, or ``A``-``J`` when ``choices`` is None (letters only, no option texts). The response
is read at four levels, strongest first; the first level that yields any candidate decides:

1. **Final-answer containers**: ``<answer>...</answer>`` and ``\\boxed{...}``.
2. **Answer phrases**: ``Answer: B``, ``the answer is b``, ``The final answer is (C)``,
   ``the correct option is blue``, ``**Answer:** B`` (text up to the end of the line or
   sentence).
3. **A short response** (one line, at most 80 characters) read as an answer on its own:
   ``B``, ``(B)``, ``B.``, ``B)``, ``b``, ``B. blue``, ``blue``.
4. **Free text**: option references inside reasoning, i.e. ``(B)``, ``option B`` /
   ``choice B``, a line starting ``B.`` or ``B)``, and option texts as whole words
   ("blue" when B is "blue"; a longer option text such as "light blue" wins over the shorter
   "blue" it contains).

Inside one answer span (levels 1-3) a letter is read from the span's start: ``(b)`` in
parentheses (any case); an upper-case letter followed by ``.``, ``)``, ``:``, ``,``, ``;``,
a space or the end (but ``A``/``I`` followed by a lower-case word is the article/pronoun, as
in "A cat"); or a lone lower-case letter that is the whole span ("b."). Leading ``option`` /
``choice`` and markdown ``*`` / ``$`` / quotes are skipped. Without a letter, option texts in
the span are used. A span whose letter and option text disagree ("B. red" when red is A)
commits to two options.

A level whose candidates name **two different options** gives None ("A or B", two boxed
letters, "the sky is blue, not red"), and so does a response with **no candidate** at all;
``accuracy_reward`` scores None as 0.0.

Math answers (``kind="math"``) are compared with ``math_verify.parse``/``verify``
(equivalent expressions, numbers to 6 decimals), the reference parsed as one LaTeX
expression (``2x`` is 2x, not 2), in worker processes under a hard time limit
(``rewards/mathcheck.py``): a check past the limit is a failed reward, NaN, not 0.0.

Text answers (``kind="text"``) compare SQuAD-normalised strings (lower case, punctuation and
the articles a/an/the removed, whitespace collapsed) of the reference and of the response's
answer span (levels 1-2) or, without one, the whole response.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

DEFAULT_LETTERS = "ABCDEFGHIJ"
"""Letters accepted when a question's options are not given."""
SHORT_RESPONSE_CHARS = 80
"""A one-line response up to this length is read as an answer on its own (level 3)."""

Choices = dict[str, str] | list[str] | None

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
# No two quantifiers here can match the same characters one after the other (``\s*`` then
# ``(?:\*\*)?\s*`` could: "answer" + 16k spaces took 7 s), so matching is linear.
_PHRASE_RE = re.compile(
    r"\b(?:(?:final|correct|right|best)\s+)?(?:answer|option|choice)\s*(?:\*\*\s*)?"
    r"(?:is|would\s+be|should\s+be|will\s+be|=|:)\s*(?:\*\*\s*)?:?",
    re.IGNORECASE,
)
SPAN_MAX_CHARS = 300
"""An answer phrase's span ends at its line or sentence, and after this many characters at
most (an answer is short; without a bound, k phrases in one long line read k^2 characters)."""
_SPAN_END_RE = re.compile(r"\n|[.!?](?=\s|$)")
_SKIP_PREFIX_RE = re.compile(r"^(?:[\s*$\"'`“”‘’]|\\text\{|option\b|choice\b|letter\b)+", re.I)
_PAREN_LETTER_RE = re.compile(r"^\(\s*([A-Za-z])\s*\)")
_UPPER_LETTER_RE = re.compile(r"^([A-Z])(?=[.):,;}\s*$]|$)")
_ARTICLE_RE = re.compile(r"^[AI]\s+(?!(?:or|and|nor)\b)[a-z]")
_LIST_NEXT_RE = re.compile(r"^\s*(?:,|;|/|&|\band\b|\bor\b|\bnor\b)\s*\(?([A-Za-z])\b\)?")
_LONE_LETTER_RE = re.compile(r"^([A-Za-z])[\s.):*$}]*$")
_FREE_PAREN_RE = re.compile(r"\(\s*([A-Za-z])\s*\)")
_FREE_OPTION_RE = re.compile(r"\b(?:option|choice)\s+\(?([A-Za-z])\b\)?", re.IGNORECASE)
_FREE_LINE_RE = re.compile(r"(?m)^[ \t]*([A-Z])[.)](?=\s|$)")  # [ \t]: not across lines


def _letters_and_texts(choices: Choices) -> tuple[str, dict[str, str]]:
    """Valid letters and a map letter -> normalised option text ({} when only letters)."""
    if choices is None:
        return DEFAULT_LETTERS, {}
    if isinstance(choices, dict):
        items = [(str(k).strip().upper(), str(v)) for k, v in choices.items()]
    else:
        items = [(string.ascii_uppercase[i], str(v)) for i, v in enumerate(choices)]
    letters = "".join(k for k, _ in items)
    texts = {k: _norm(v) for k, v in items if _norm(v)}
    return letters, texts


def _norm(text: str) -> str:
    """Lower case, whitespace collapsed, surrounding punctuation stripped."""
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, with nested braces balanced (one pass over the
    text: unclosed boxes do not make it quadratic)."""
    starts = {m.end() - 1 for m in _BOXED_RE.finditer(text)}  # their "{" positions
    if not starts:
        return []
    out: list[tuple[int, str]] = []
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            j = stack.pop()
            if j in starts:
                out.append((j, text[j + 1 : i]))
    return [content for _, content in sorted(out)]


_BOXED_RE = re.compile(r"\\boxed\s*\{")


def _text_mentions(text: str, texts: dict[str, str]) -> set[str]:
    """Letters whose option text occurs in ``text`` as whole words (longest spans win: a
    mention inside a longer option's mention does not count)."""
    low = " ".join(text.lower().split())
    spans = sorted(
        (m.start(), -m.end(), letter)
        for letter, opt in texts.items()
        for m in re.finditer(r"(?<!\w)" + re.escape(opt) + r"(?!\w)", low)
    )  # by start, longest first
    kept: set[str] = set()
    reach = -1  # furthest end of the spans before this (start, end) group
    i = 0
    while i < len(spans):
        s, neg_e, _ = spans[i]
        group = []
        while i < len(spans) and spans[i][:2] == (s, neg_e):
            group.append(spans[i][2])
            i += 1
        if reach < -neg_e:  # no earlier span (starting no later, and longer) covers it
            kept.update(group)
        reach = max(reach, -neg_e)
    return kept


def _span_letters(span: str, letters: str, texts: dict[str, str]) -> set[str]:
    """Options one answer span commits to (module docstring, "Inside one answer span")."""
    span = _SKIP_PREFIX_RE.sub("", span.strip()).strip()
    if not span:
        return set()
    found: set[str] = set()
    m = _PAREN_LETTER_RE.match(span) or _LONE_LETTER_RE.match(span)
    if m is None and not _ARTICLE_RE.match(span):
        m = _UPPER_LETTER_RE.match(span)
    if m is not None and m.group(1).upper() in letters:
        found.add(m.group(1).upper())
        rest = span[m.end() :]
        # "A, B" / "A or B" / "(A) and (C)": a list of letters commits to each of them.
        while (nxt := _LIST_NEXT_RE.match(rest)) and nxt.group(1).upper() in letters:
            found.add(nxt.group(1).upper())
            rest = rest[nxt.end() :]
        # "B. blue": the text after a letter counts when it is exactly an option's text.
        rest = _norm(rest)
        return found | {letter for letter, opt in texts.items() if rest == opt}
    return _text_mentions(span, texts)


def _phrase_spans(text: str) -> list[str]:
    """The text after each answer phrase, up to the end of its line or sentence (at most
    ``SPAN_MAX_CHARS``)."""
    spans = []
    for m in _PHRASE_RE.finditer(text):
        start = m.end()
        stop = min(len(text), start + SPAN_MAX_CHARS)
        # "B." ends at its period only when a sentence follows; keep the letter's delimiter.
        end = _SPAN_END_RE.search(text, start + 1 if start < stop else start, stop)
        spans.append(text[start : end.start() if end else stop])
    return spans


def _free_text_letters(text: str, letters: str, texts: dict[str, str]) -> set[str]:
    found = set()
    for rx in (_FREE_PAREN_RE, _FREE_OPTION_RE, _FREE_LINE_RE):
        found |= {m.group(1).upper() for m in rx.finditer(text)}
    found &= set(letters)
    return found | _text_mentions(text, texts)


def extract_choice(response: str, choices: Choices = None) -> str | None:
    """The option letter ``response`` commits to, or None (rules in the module docstring)."""
    letters, texts = _letters_and_texts(choices)
    containers = [m.group(1) for m in _TAG_RE.finditer(response)] + _boxed_contents(response)
    levels: list[Callable[[], set[str]]] = [
        lambda: set().union(*[_container_letters(c, letters, texts) for c in containers]),
        lambda: set().union(*[_span_letters(s, letters, texts) for s in _phrase_spans(response)]),
        lambda: (
            _span_letters(response, letters, texts)
            if "\n" not in response.strip() and len(response.strip()) <= SHORT_RESPONSE_CHARS
            else set()
        ),
        lambda: _free_text_letters(response, letters, texts),
    ]
    for level in levels:
        found = level()
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def _container_letters(content: str, letters: str, texts: dict[str, str]) -> set[str]:
    """An ``<answer>``/``\\boxed`` content: an answer phrase inside it, else the content."""
    inner = set().union(*[_span_letters(s, letters, texts) for s in _phrase_spans(content)])
    return inner or _span_letters(content, letters, texts)


def gold_letter(answer: str, choices: Choices) -> str:
    """The reference option's letter: a letter form ("B", "(b)") or an option's text."""
    letters, texts = _letters_and_texts(choices)
    a = answer.strip().strip("().: ")
    if len(a) == 1 and a.upper() in letters:
        return a.upper()
    for letter, opt in texts.items():
        if _norm(answer) == opt:
            return letter
    raise ValueError(
        f"answer={answer!r} is neither one of the letters {list(letters)} nor an option text"
    )


def _choice_reward(response: str, answer: str, choices: Choices) -> float:
    return float(extract_choice(response, choices) == gold_letter(answer, choices))


def _math_reward(response: str, answer: str, choices: Choices) -> float:
    from rewards.mathcheck import default_checker

    return default_checker().score(response, answer)


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalise_text_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def _text_reward(response: str, answer: str, choices: Choices) -> float:
    containers = [m.group(1) for m in _TAG_RE.finditer(response)] + _boxed_contents(response)
    spans = containers or _phrase_spans(response) or [response]
    gold = normalise_text_answer(answer)
    preds = {normalise_text_answer(s) for s in spans}
    return float(preds == {gold})


KINDS: dict[str, Callable[[str, str, Choices], float]] = {
    "choice": _choice_reward,
    "math": _math_reward,
    "text": _text_reward,
}
"""Answer kinds: how a response is compared with its reference."""


def accuracy_reward(
    response: str, answer: str, *, choices: Choices = None, kind: str = "choice"
) -> float:
    """1.0 if ``response`` answers ``answer`` correctly, else 0.0; NaN when a math check
    could not finish (its time limit, a crashed worker: ``rewards.mathcheck``).

    ``kind`` picks the comparison from ``KINDS`` (choice | math | text). For ``choice`` the
    reference is a letter or an option text; a response that commits to two options or to
    none scores 0.0.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown accuracy kind {kind!r}; valid kinds: {sorted(KINDS)}")
    return KINDS[kind](response, answer, choices)
