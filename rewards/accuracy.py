"""Accuracy reward: 1.0 when a response's answer matches the reference, else 0.0.

Pure Python (plus ``math-verify`` for math answers); no ray, no torch. The end of this module
declares the ``accuracy`` endpoint: its items (validated before they reach these functions),
settings and scorer.

Choice extraction (``extract_choice``) reads what models really write. The valid letters are
the keys of ``choices`` (a dict letter -> option text), ``A, B, C, ...`` for a list of option
texts, or ``A``-``J`` when ``choices`` is None (letters only, no option texts).

The response is first normalised (``normalise_response``): zero-width characters dropped,
NFKC (full-width ``（Ｃ）``, ``B．``, circled ``Ⓑ``, mathematical bold ``𝐁``), CJK brackets
``【C】`` as parentheses, curly quotes and backticks as plain quotes, emoji and other symbols
as spaces. It is then read at these levels, strongest first; the first level with a
candidate decides:

1. **Final-answer containers**: ``<answer>...</answer>`` and ``\\boxed{...}``.
2. **Answer phrases**: ``Answer: B``, ``the answer is b``, ``The final answer is (C)``,
   ``the correct option is blue``, ``**Answer:** B``, ``Answer - C``, ``{"answer": "C"}``,
   ``Correct: A``, ``So the answer must be C``, the line under a ``### Answer`` heading, and
   the same in other languages (``答案是B``, ``答案：D``, ``正解は A です``, ``정답은 B입니다``,
   ``La respuesta correcta es la B``, ``Die richtige Antwort ist C``, ``La bonne réponse est
   C``, ``Ответ: D``). A span runs to the end of its line or sentence, at most
   ``SPAN_MAX_CHARS``.
3. **A short response** (one line, at most 80 characters) read as an answer on its own:
   ``B``, ``(B)``, ``B.``, ``B)``, ``b``, ``B. blue``, ``blue``, ``It's B (not D).``, ``Not A
   but C.``. If it names two options, only its conclusion (level 6) can still decide.
4. **A letter alone on the first line** of a longer answer: ``B\\nBecause ...``.
5. **A first-person choice**: ``I choose D.``, ``I'd go with C``, ``I think B.``
6. **The last conclusion** of the reasoning: ``... So B.``, ``... Hence (C).``,
   ``..., so it must be blue.``
7. **Free text**: option references inside reasoning, i.e. ``(B)``, ``option B`` /
   ``choice B`` and option texts as whole words ("blue" when B is "blue"; a longer option
   text such as "light blue" wins over the shorter "blue" it contains). Lines that list the
   options (``A. red``) are read only when nothing else names an option: a quoted option
   list is not an answer when a reference follows it.

At every level, an option the response rules out ("not red", "isn't B", "(not D)") is no
candidate: "It is not red, so it must be blue" is blue, "It is not red." is no answer.

Inside one answer span (levels 1-3) a letter is read from the span's start: ``(b)`` in
parentheses (any case); an upper-case letter followed by punctuation, a space, a quote, a
letter of another script (``B입니다``) or the end (but ``A``/``I`` followed by a lower-case
word is the article/pronoun, as in "A cat"); or a lone lower-case letter that is the whole
span ("b."). Leading ``option`` / ``choice`` / ``it is`` / ``it must be``, markdown ``*`` /
``$`` and quotes are skipped. Without a letter, option texts in the span are used. A span
whose letter and option text disagree ("B. red" when red is A) commits to two options.

A level whose candidates name **two different options** gives None ("A or B", "答案是B或C",
two boxed letters), and so does a response with **no candidate** at all; ``accuracy_reward``
scores None as 0.0. Every rule is linear in the response's length (``bench/extraction.py``).

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
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from models.config import check
from models.tasks import Task
from rewards.spec import EndpointSettings, EndpointSpec, Scorer, declare
from rewards.types import Limits, RewardInputError, text_field

DEFAULT_LETTERS = "ABCDEFGHIJ"
"""Letters accepted when a question's options are not given."""
SHORT_RESPONSE_CHARS = 80
SHORT_LEVEL = 2
"""A one-line response up to this length is read as an answer on its own (level 3)."""

Choices = dict[str, str] | list[str] | None

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
# Answer phrases in the languages models answer in. No two quantifiers here can match the
# same characters one after the other (``\s*`` then ``(?:\*\*)?\s*`` could: "answer" + 16k
# spaces took 7 s), so matching is linear.
_KEYWORDS = (
    r"\b(?:(?:final|correct|right|best)\s+)?(?:answer|option|choice)['\"]?"  # "answer": in JSON
    r"|\bcorrect(?=\s*:)"  # Correct: A
    r"|\b(?:la\s+)?respuesta(?:\s+correcta)?"  # La respuesta correcta es la B
    r"|\b(?:die\s+)?(?:richtige\s+)?antwort"  # Die richtige Antwort ist C
    r"|\b(?:la\s+)?(?:bonne\s+)?r[ée]ponse"  # La bonne réponse est C
    r"|\bответ"  # Ответ: D
    r"|答案|正解|정답|回答"  # 答案是B, 正解は A です, 정답은 B입니다
)
_VERBS = (  # a Latin verb ends at a word boundary ("ist" is not "is" + "t")
    r"(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be|has\s+to\s+be|ist|est"
    r"|es(?:\s+la)?)\b|=|:|[-–—](?=\s)|是|为|為|は|은|는)"
)
_PHRASE_RE = re.compile(rf"(?:{_KEYWORDS})\s*(?:\*\*\s*)?{_VERBS}\s*(?:\*\*\s*)?:?", re.I)
_HEADING_RE = re.compile(r"(?im)^#{1,6}[ \t]*(?:final[ \t]+)?answer[ \t]*:?[ \t]*\n\s*")
"""A Markdown heading ``### Answer`` whose answer is the next line."""
_CHOOSE_RE = re.compile(
    r"\bI(?:'d|'ll|\s+would|\s+will)?\s+(?:choose|pick|select|go\s+with|think|believe|guess)\b"
    r"\s*:?",
    re.I,
)
_CONCLUSION_RE = re.compile(
    r"(?:^|[.!?;,\n])\s*(?:and\s+)?(?:so|hence|therefore|thus|consequently)\b[,:]?\s*", re.I
)
SPAN_MAX_CHARS = 300
"""An answer span ends at its line or sentence, and after this many characters at most (an
answer is short; without a bound, k phrases in one long line read k^2 characters)."""
_SPAN_END_RE = re.compile(r"\n|[.!?](?=\s|$)")
_SKIP_PREFIX_RE = re.compile(
    r"^(?:[\s*$\"'`]|\\text\{|option\b|choice\b|letter\b"
    r"|it(?:'s|\s+is|\s+must\s+be|\s+has\s+to\s+be|\s+should\s+be)\b|the\s+answer\s+is\b)+",
    re.I,
)
_NOT_BUT_RE = re.compile(r"^not\s+\(?[A-Za-z]\)?[,;]?\s+(?:but|rather)\s+", re.I)
_PAREN_LETTER_RE = re.compile(r"^\(\s*([A-Za-z])\s*\)")
# a letter ends at punctuation, a space, a quote or a letter of another script ("B입니다";
# [^\W\d_A-Za-z] is a word character that is not an ASCII letter, digit or underscore)
_UPPER_LETTER_RE = re.compile(r"^([A-Z])(?=[.):,;}\s*$\"']|[^\W\d_A-Za-z]|$)")
# "A cat" is the article, "A because ..." / "A is right" the letter
_ARTICLE_RE = re.compile(
    r"^[AI]\s+(?!(?:or|and|nor|but|because|since|as|so|is|was|seems|fits|matches)\b)[a-z]"
)
_LIST_NEXT_RE = re.compile(
    r"^\s*(?:,|;|/|&|\b(?:and|or|nor|o|y|oder|und|ou|et|или|и)\b|或者?|和|及)\s*\(?([A-Za-z])(?![A-Za-z])\)?"
)
_LONE_LETTER_RE = re.compile(r"^([A-Za-z])[\s.):*$}\"']*$")
_FREE_PAREN_RE = re.compile(r"\(\s*([A-Za-z])\s*\)")
_FREE_OPTION_RE = re.compile(r"\b(?:option|choice)\s+\(?([A-Za-z])\b\)?", re.IGNORECASE)
_LIST_LINE_RE = re.compile(r"(?m)^[ \t]*([A-Z])[.)](?=\s|$)[^\n]*")  # [ \t]: not across lines
_NEG_LETTER_RE = re.compile(r"\b(?:not|isn't|never)\s+(?:option\s+|choice\s+)?\(?([A-Z])\b\)?")
_NEGATORS = r"(?:not|isn't|never)\s+(?:the\s+)?"

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_QUOTES_BRACKETS = str.maketrans(
    {
        "【": "(",
        "】": ")",
        "〔": "(",
        "〕": ")",
        "〖": "(",
        "〗": ")",
        "「": '"',
        "」": '"',
        "『": '"',
        "』": '"',
        "“": '"',
        "”": '"',
        "‘": "'",
        "’": "'",
        "`": "'",
    }
)


def normalise_response(text: str) -> str:
    """What extraction reads: zero-width characters removed, NFKC (full-width ``（Ｃ）`` and
    ``B．``, circled ``Ⓑ``, mathematical bold ``𝐁`` become ``(C)``, ``B.``, ``B``, ``B``),
    CJK brackets as parentheses, curly quotes and backticks as straight quotes, and other
    symbols (emoji, check marks) as spaces; U+FFFD (a byte the tokenizer could not decode)
    stays: "B\ufffd" is not "B"."""
    if text.isascii():
        return text.replace("`", "'")
    text = unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH)).translate(_QUOTES_BRACKETS)
    return "".join(
        " " if unicodedata.category(ch) == "So" and ch != "\ufffd" else ch for ch in text
    )


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
    span = _NOT_BUT_RE.sub("", span)  # "Not A but C."
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


def _spans_after(pattern: re.Pattern, text: str) -> list[str]:
    """The text after each match of ``pattern``, up to the end of its line or sentence (at
    most ``SPAN_MAX_CHARS``)."""
    spans = []
    for m in pattern.finditer(text):
        start = m.end()
        stop = min(len(text), start + SPAN_MAX_CHARS)
        # "B." ends at its period only when a sentence follows; keep the letter's delimiter.
        end = _SPAN_END_RE.search(text, start + 1 if start < stop else start, stop)
        spans.append(text[start : end.start() if end else stop])
    return spans


def _phrase_spans(text: str) -> list[str]:
    """Answer phrases' spans, and the line under a ``### Answer`` heading."""
    return _spans_after(_PHRASE_RE, text) + _spans_after(_HEADING_RE, text)


def _negated(text: str, texts: dict[str, str]) -> set[str]:
    """Letters ``text`` rules out: "not (D)", "isn't B", "not red" for red's letter."""
    out = {m.group(1) for m in _NEG_LETTER_RE.finditer(text)}
    low = " ".join(text.lower().split())
    for letter, opt in texts.items():
        if re.search(r"\b" + _NEGATORS + re.escape(opt) + r"(?!\w)", low):
            out.add(letter)
    return out


def _free_text_letters(text: str, letters: str, texts: dict[str, str]) -> set[str]:
    """Option references in reasoning; an option list quoted in it ("A. red" lines) counts
    only when nothing else names an option."""
    body = _LIST_LINE_RE.sub(" ", text)
    found = set()
    for rx in (_FREE_PAREN_RE, _FREE_OPTION_RE):
        found |= {m.group(1).upper() for m in rx.finditer(body)}
    found = (found & set(letters)) | _text_mentions(body, texts)
    if not found:
        found = {m.group(1) for m in _LIST_LINE_RE.finditer(text)} & set(letters)
    return found


def _first_line_letter(text: str, letters: str, texts: dict[str, str]) -> set[str]:
    """A letter alone on the first line of a longer answer ("B\nBecause ...")."""
    first, sep, _ = text.strip().partition("\n")
    if not sep:
        return set()
    first = _SKIP_PREFIX_RE.sub("", first.strip()).strip()
    m = _PAREN_LETTER_RE.match(first)
    if m is None or first[m.end() :].strip(" .:*"):  # "(B)" alone, or "B", "B.", "**B**"
        m = _LONE_LETTER_RE.match(first)
    return {m.group(1).upper()} & set(letters) if m else set()


def _last_conclusion(text: str, letters: str, texts: dict[str, str]) -> set[str]:
    """The last "So B." / "Hence (C)." / "Therefore it must be blue." of the reasoning."""
    spans = _spans_after(_CONCLUSION_RE, text)
    return _span_letters(spans[-1], letters, texts) if spans else set()


def extract_choice(response: str, choices: Choices = None) -> str | None:
    """The option letter ``response`` commits to, or None (rules in the module docstring)."""
    letters, texts = _letters_and_texts(choices)
    text = normalise_response(response)
    containers = [m.group(1) for m in _TAG_RE.finditer(text)] + _boxed_contents(text)
    short = "\n" not in text.strip() and len(text.strip()) <= SHORT_RESPONSE_CHARS
    # Level SHORT_LEVEL reads a short response whole; when it names two options ("too warm
    # for red, so it must be green") its conclusion may still decide.
    levels: list[Callable[[], set[str]]] = [
        lambda: set().union(*[_container_letters(c, letters, texts) for c in containers]),
        lambda: set().union(*[_span_letters(s, letters, texts) for s in _phrase_spans(text)]),
        lambda: _span_letters(text, letters, texts) if short else set(),
        lambda: _first_line_letter(text, letters, texts),
        lambda: set().union(
            *[_span_letters(s, letters, texts) for s in _spans_after(_CHOOSE_RE, text)]
        ),
        lambda: _last_conclusion(text, letters, texts),
        lambda: _free_text_letters(text, letters, texts),
    ]
    negated: set[str] | None = None
    for i, level in enumerate(levels):
        found = level()
        if found:  # an option the response rules out is no candidate ("not red, so blue")
            negated = _negated(text, texts) if negated is None else negated
            found = found - negated if len(found - negated) <= 1 else found
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:  # two options: the response hedged, unless (short) it concludes
            last = _last_conclusion(text, letters, texts) - negated if i == SHORT_LEVEL else ()
            return next(iter(last)) if len(last) == 1 else None
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


# ---- the endpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyItem:
    """One request item: ``response`` (may be empty: a rollout can say nothing), ``answer``
    (non-empty), ``kind`` (choice | math | text), ``choices`` (option texts, letter -> text,
    or null)."""

    response: str
    answer: str
    kind: str = "choice"
    choices: list[str] | dict[str, str] | None = None


def _check_choice_keys(choices: list | dict, field: str) -> None:
    """1 to 26 options, lettered A, B, C, ... in order (a dict's keys, either case)."""
    letters = string.ascii_uppercase
    if not 1 <= len(choices) <= len(letters):
        raise RewardInputError(field, f"{len(choices)} options; 1 to {len(letters)} (A-Z)")
    if isinstance(choices, dict):
        keys = [k.strip().upper() for k in choices]
        if keys != list(letters[: len(keys)]):
            raise RewardInputError(
                field, f"keys {list(choices)} must be the letters A, B, C, ... in order"
            )


def parse_item(item: dict, field: str, lim: Limits) -> AccuracyItem:
    """A request item -> ``AccuracyItem``; ``RewardInputError`` naming the field if bad."""
    response = text_field(item, "response", field, lim, empty_ok=True)
    answer = text_field(item, "answer", field, lim)
    kind = item.get("kind", "choice")
    if not isinstance(kind, str) or kind not in KINDS:
        raise RewardInputError(f"{field}.kind", f"{kind!r} is not one of {sorted(KINDS)}")
    choices = item.get("choices")
    ok = (
        choices is None
        or (isinstance(choices, list) and all(isinstance(c, str) for c in choices))
        or (
            isinstance(choices, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in choices.items())
        )
    )
    if not ok:
        raise RewardInputError(
            f"{field}.choices", "expected null, a list of strings or an object letter -> string"
        )
    if choices is not None:
        _check_choice_keys(choices, f"{field}.choices")
    if kind == "choice":
        try:
            gold_letter(answer, choices)
        except ValueError as e:
            raise RewardInputError(f"{field}.answer", str(e)) from None
    return AccuracyItem(response, answer, kind, choices)


def item_of(rollout) -> dict | None:
    """An understanding rollout's item: its answer text against the request's reference;
    None for a request without one (DSR's captioning task: nothing to check)."""
    q = rollout.request
    if q.answer is None:
        return None
    return {
        "response": rollout.text or "",
        "answer": q.answer,
        "kind": q.answer_kind,
        "choices": list(q.choices) if q.choices else None,
    }


@dataclass(frozen=True)
class AccuracySettings(EndpointSettings):
    """The accuracy endpoint (``rewards.accuracy.*``)."""

    max_batch_size: int = 64
    batch_wait_s: float = 0.005
    num_cpus: float = 0.5
    math_timeout_s: float = 5.0
    """Hard limit on one math answer's check (math-verify in a worker process, killed past
    it); a check over the limit is a failed reward (NaN), counted in healthz."""
    math_workers: int = 2
    """Math checker processes per replica; one hanging check holds one of them."""

    def check_settings(self, key: str) -> None:
        super().check_settings(key)
        check(
            self.math_timeout_s > 0,
            f"{key}.math_timeout_s",
            self.math_timeout_s,
            "must be > 0",
            "use 5",
        )
        check(
            self.math_workers >= 1,
            f"{key}.math_workers",
            self.math_workers,
            "must be >= 1",
            "use 2",
        )


class AccuracyScorer(Scorer):
    """Rules only, no weights: batches run at once, a math check in a worker process each."""

    def __init__(self, s: AccuracySettings):
        from concurrent.futures import ThreadPoolExecutor

        from rewards import mathcheck

        # math answers are checked in worker processes, each under a hard limit; a hanging
        # one holds one worker and one thread, and the other items and batches go on
        self.math = mathcheck.configure(s.math_workers, s.math_timeout_s)
        self._threads = ThreadPoolExecutor(s.math_workers + 1)
        self.concurrent_batches = s.math_workers + 1

    def score(self, items: list[AccuracyItem]) -> list[float]:
        def one(it: AccuracyItem) -> float:
            return accuracy_reward(it.response, it.answer, choices=it.choices, kind=it.kind)

        return list(self._threads.map(one, items))

    def stats(self) -> dict:
        return {"math_checks": self.math.checks, "math_failures": dict(self.math.failures)}


SPEC = declare(
    EndpointSpec(
        name="accuracy",
        tasks=(Task.UND,),
        settings=AccuracySettings,
        parse_item=parse_item,
        item_of=item_of,
        make_scorer=AccuracyScorer,
        title="pairuni accuracy reward",
    )
)
