"""A labelled corpus of multiple-choice responses, by family, for ``bench.extraction``.

Each case is a response as a model might write it, the question's options, and the label a
careful grader gives: the option letter the response commits to, or None when it commits to
none or to more than one. Labels come from the templates (written by hand, one intended
answer each), filled for every answer letter and several option sets, so each family is
exercised on every position. Families follow the answers models write: bare letters, answer
phrases, wrapping and Unicode, other languages, conclusions after reasoning, negation, the
letter on the first line, option texts, containers, reasoning blocks, and the ambiguous
cases that must stay unanswered.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCD"
OPTION_SETS = (
    ["red", "blue", "green", "yellow"],
    ["a cat", "a dog", "a horse", "a bird"],
    ["2", "12", "20", "21"],  # options that contain each other
)
_FULL_WIDTH = {c: chr(0xFF21 + i) for i, c in enumerate(LETTERS)}
_CIRCLED = {c: chr(0x24B6 + i) for i, c in enumerate(LETTERS)}
_BOLD = {c: chr(0x1D400 + i) for i, c in enumerate(LETTERS)}

# (family, template, label): {L} the answer's letter, {l} lower case, {T} its option text,
# {O} another letter, {U} another option's text, {W} {C} {B} the letter full-width, circled,
# bold, {LIST} the options as "A. red" lines. label "L" = the answer's letter, None = none.
TEMPLATES: tuple[tuple[str, str, str | None], ...] = (
    ("bare", "{L}", "L"),
    ("bare", "({L})", "L"),
    ("bare", "{L}.", "L"),
    ("bare", "{l}", "L"),
    ("bare", "**{L}**", "L"),
    ("bare", "{L}. {T}", "L"),
    ("phrase", "Answer: {L}", "L"),
    ("phrase", "The answer is ({L}).", "L"),
    ("phrase", "The correct answer is {L} because the image shows it clearly.", "L"),
    ("phrase", "Final answer: {L}", "L"),
    ("phrase", "**Answer:** {L}", "L"),
    ("phrase", "Answer - {L}", "L"),
    ("phrase", '{{"answer": "{L}"}}', "L"),
    ("phrase", "Correct: {L}", "L"),
    ("phrase", "### Answer\n**{L}**", "L"),
    ("phrase", "I choose {L}.", "L"),
    ("phrase", "I think {L}.", "L"),
    ("phrase", "I'd go with {L}.", "L"),
    ("phrase", "After looking at every option, the best option is {L}.", "L"),
    ("unicode", "`{L}`", "L"),
    ("unicode", "【{L}】", "L"),
    ("unicode", "（{L}）", "L"),
    ("unicode", "{W}", "L"),
    ("unicode", "{L}．", "L"),
    ("unicode", "\u200b{L}", "L"),
    ("unicode", "{C}", "L"),
    ("unicode", "{B}", "L"),
    ("unicode", "✅ {L}", "L"),
    ("unicode", "答案：{W}", "L"),
    ("unicode", "The answer is “{L}”.", "L"),
    ("language", "答案是{L}", "L"),
    ("language", "La respuesta correcta es la {L}", "L"),
    ("language", "Die richtige Antwort ist {L}", "L"),
    ("language", "Ответ: {L}", "L"),
    ("language", "正解は {L} です", "L"),
    ("language", "정답은 {L}입니다", "L"),
    ("language", "La bonne réponse est {L}.", "L"),
    ("conclusion", "The picture is bright and the object is easy to see. So {L}.", "L"),
    ("conclusion", "{LIST}\nThe object in the image matches one of these. Hence ({L}).", "L"),
    ("conclusion", "Options:\n{LIST}\nComparing them, it looks like option {L}.", "L"),
    ("conclusion", "Let me think. The other options do not fit. So the answer must be {L}.", "L"),
    ("conclusion", "{U} does not fit what is shown, so it must be {T}.", "L"),
    ("negation", "It is not {U}, so it must be {T}.", "L"),
    ("negation", "It's {L} (not {O}).", "L"),
    ("negation", "Not {O} but {L}.", "L"),
    ("first line", "{L}\nThe image shows it plainly.", "L"),
    ("first line", "({L})\nBecause the other options do not match.", "L"),
    ("option text", "{T}", "L"),
    ("option text", "It is {T}.", "L"),
    ("option text", "The answer is {T}.", "L"),
    ("container", "<answer>{L}</answer>", "L"),
    ("container", "Looking at the image... \\boxed{{{L}}}", "L"),
    ("container", "Option {O} is wrong. <answer>{L}</answer>", "L"),
    ("reasoning", "<think>It could be {O}, but no.</think> The answer is {L}.", "L"),
    ("ambiguous", "{L} or {O}", None),
    ("ambiguous", "It could be ({L}) or ({O}).", None),
    ("ambiguous", "Answer: {L}, {O}", None),
    ("ambiguous", "\\boxed{{{L}}} and \\boxed{{{O}}}", None),
    ("ambiguous", "答案是{L}或{O}", None),
    ("ambiguous", "I am not sure.", None),
    ("ambiguous", "It is not {T}.", None),
    ("ambiguous", "{LIST}", None),
    ("ambiguous", "", None),
)


@dataclass(frozen=True)
class Case:
    family: str
    response: str
    choices: list[str]
    label: str | None


def cases() -> list[Case]:
    """Every template filled for every answer letter and option set (duplicates dropped)."""
    out: list[Case] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for options in OPTION_SETS:
        listing = "\n".join(f"{c}. {t}" for c, t in zip(LETTERS, options))
        for i, letter in enumerate(LETTERS):
            other = LETTERS[(i + 1) % len(LETTERS)]
            fill = {
                "L": letter,
                "l": letter.lower(),
                "T": options[i],
                "O": other,
                "U": options[(i + 1) % len(LETTERS)],
                "W": _FULL_WIDTH[letter],
                "C": _CIRCLED[letter],
                "B": _BOLD[letter],
                "LIST": listing,
            }
            for family, template, label in TEMPLATES:
                response = template.format(**fill)
                key = (response, tuple(options))
                if key in seen:
                    continue
                seen.add(key)
                out.append(Case(family, response, list(options), letter if label else None))
    return out
