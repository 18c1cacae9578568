"""Quadruple completion as data: items, template variants, strict reply validation, the
answer cache, the quadruples file, and completing aligned pairs (PairUni section 2.1.1).

No network here (``pairing/augment.py`` is the client). The file contract between
``pairuni augment`` and ``pairuni pair``:

* ``quadruples.jsonl``: one line per completed item, ``{"item_id", "side", "image_ref",
  "template", "model", "variant", ...}`` plus ``"prompt"`` (side und: the detail prompt C
  of an understanding item) or ``"question", "choices", "answer"`` (side gen: four option
  texts, the answer a letter A-D). With the one-reply templates (``reply: quadruple``,
  PairUni Figs. 10, 11) a line also keeps the other half the model wrote: ``"generated_qa"``
  (side und: question, choices, answer about the image; the item's own Q, A are what
  trains) or ``"generated_prompt"`` (side gen: a detail prompt; the item's own caption C is
  what trains). ``item_id`` hashes the side, the image bytes and the item's text, so it
  survives moving the data.
* ``rejected.jsonl``: every item that was not completed, with ``stage`` and ``reason``.

``pairuni pair`` with ``pairing.quadruples=[.../quadruples.jsonl]`` fills the missing half
of each aligned pair whose item is in the file and clears its ``needs_augmentation``; an
aligned pair whose item was rejected keeps the flag (nothing is invented).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pairing.config import VARIANTS, AugmentConfig
from pairing.datasets import DataError

logger = logging.getLogger(__name__)
LETTERS = ("A", "B", "C", "D")
TASK_OF_SIDE = {"und": "caption", "gen": "qa"}
"""An understanding item lacks C (caption task); a generation item lacks Q, A (qa task)."""


# ----------------------------------------------------------------------------- items


def item_id(side: str, image: bytes, text: str) -> str:
    """Stable id of one instance: ``<side>-<sha256(side, image bytes, text)[:24]>``."""
    h = hashlib.sha256()
    for part in (side.encode(), image, text.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return f"{side}-{h.hexdigest()[:24]}"


def item_text(side: str, item) -> str:
    """The text an item brings: question + answer (und ``UndItem``) or the caption (gen)."""
    if side == "und":
        return f"Question: {item.question}\nAnswer: {item.answer}"
    return item.prompt


@dataclass(frozen=True)
class AugItem:
    """One instance to complete."""

    item_id: str
    side: str
    """und (needs the detail prompt C) | gen (needs question, options, answer)."""
    image_ref: str
    image: bytes = field(repr=False)
    text: str
    """The dataset text given to the model as context (``item_text``)."""
    source: str = ""
    category: str = ""


def aug_items(side: str, items: Iterable) -> list[AugItem]:
    """``AugItem``s of read ``UndItem``s / ``GenItem``s."""
    out = []
    for it in items:
        text = item_text(side, it)
        out.append(
            AugItem(
                item_id(side, it.image, text),
                side,
                it.image_ref,
                it.image,
                text,
                getattr(it, "source", ""),
                getattr(it, "category", ""),
            )
        )
    return out


# ----------------------------------------------------------------------------- variants

_TEXT = re.compile(
    r"\"[^\"]{1,80}\"|“[^”]{1,80}”|\b(text|sign|says|saying|written|reads|words?|letters|"
    r"logo|title|caption|label|handwriting)\b",
    re.I,
)
_AI = re.compile(
    r"\b(ai[- ]generated|midjourney|journeydb|dall-?e|stable diffusion|sdxl|digital art|"
    r"concept art|3d render|octane render|artstation|unreal engine)\b",
    re.I,
)
_TWO = re.compile(
    r"\b(two|both|pair of|next to|beside|left of|right of|above|below|on top of|in front of|"
    r"behind)\b|\b(and|with) (a|an|two|the)\b",
    re.I,
)


def variant_keyword(it: AugItem, fallback: str) -> str:
    """Image class from the item's text, source and category, first rule that fires:
    written text (quotes, 'sign', 'says') -> text; AI-generation words or sources
    (midjourney, 'digital art') -> ai_generated; two things related ('next to', 'and a')
    -> two_objects; else ``fallback``."""
    meta = f"{it.source} {it.category} {it.image_ref}"
    if _TEXT.search(it.text):
        return "text"
    if _AI.search(it.text) or _AI.search(meta.replace("_", " ")):
        return "ai_generated"
    if _TWO.search(it.text):
        return "two_objects"
    return fallback


VARIANT_SELECTORS = {
    "keyword": variant_keyword,
    "fixed": lambda it, fallback: fallback,
}


def select_variant(it: AugItem, cfg: AugmentConfig) -> str:
    if cfg.variant_by not in VARIANT_SELECTORS:
        raise ValueError(
            f"pairing.augment.variant_by={cfg.variant_by!r}; valid: {sorted(VARIANT_SELECTORS)}"
        )
    v = VARIANT_SELECTORS[cfg.variant_by](it, cfg.variant)
    assert v in VARIANTS, v
    return v


# ----------------------------------------------------------------------------- replies


class ReplyError(ValueError):
    """A model reply that is not an acceptable answer. ``problem`` (what was wrong) is sent
    back in the repair turn; ``str()`` also names the item when one was given, for the
    rejection record and the logs."""

    def __init__(self, problem: str, item: str = ""):
        super().__init__(f"item {item}: {problem}" if item else problem)
        self.problem, self.item = problem, item


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ReplyError(f"duplicate keys {dup}")
    return dict(pairs)


def _no_constant(name: str):
    raise ReplyError(f"{name} is not valid JSON")


_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```", re.S)


def parse_json_reply(content: str | None) -> dict:
    """The reply as a JSON object. Accepted: the whole reply is one object, or one fenced
    code block holding one object. Anything else (prose around it, two objects, duplicate
    keys, NaN) raises ``ReplyError``."""
    if content is None or not content.strip():
        raise ReplyError("the reply is empty; expected one JSON object")
    s = content.strip()
    m = _FENCE.fullmatch(s)
    if m:
        s = m.group(1).strip()
    try:
        obj = json.loads(s, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ReplyError(
            f"the reply is not one JSON object ({e.msg} at line {e.lineno} column {e.colno})"
        ) from e
    if not isinstance(obj, dict):
        raise ReplyError(f"expected a JSON object, got a JSON {type(obj).__name__}")
    return obj


def _exact_keys(obj: dict, want: Sequence[str], where: str = "the object") -> None:
    if sorted(obj) != sorted(want):
        extra, missing = sorted(set(obj) - set(want)), sorted(set(want) - set(obj))
        parts = ([f"extra keys {extra}"] if extra else []) + (
            [f"missing keys {missing}"] if missing else []
        )
        raise ReplyError(f"{where} must have exactly the keys {list(want)}: {', '.join(parts)}")


def _text(obj: dict, key: str, max_words: int, min_words: int = 1) -> str:
    v = obj[key]
    if not isinstance(v, str):
        raise ReplyError(f"{key!r} must be a string, got {type(v).__name__}")
    v = " ".join(v.split())
    n = len(v.split())
    if not min_words <= n <= max_words:
        raise ReplyError(f"{key!r} has {n} words; it must have {min_words} to {max_words}")
    return v


def validate_caption(obj: dict, cfg: AugmentConfig) -> dict:
    """``{"prompt": str}`` of ``caption_min_words``..``caption_max_words`` words."""
    _exact_keys(obj, ["prompt"])
    return {"prompt": _text(obj, "prompt", cfg.caption_max_words, cfg.caption_min_words)}


def validate_qa(obj: dict, cfg: AugmentConfig) -> dict:
    """``{"question", "options": {A, B, C, D}, "answer": one of A-D}``; options distinct,
    the question without option lines. Returns question, choices (the four option texts in
    letter order) and answer."""
    _exact_keys(obj, ["question", "options", "answer"])
    question = _question(obj, cfg, "options")
    choices, _ = _choices(obj, cfg, "options", str.casefold)
    return {"question": question, "choices": choices, "answer": _answer(obj)}


def _question(obj: dict, cfg: AugmentConfig, options_key: str) -> str:
    """The question text, which must not list the options (they go under ``options_key``)."""
    question = _text(obj, "question", cfg.question_max_words)
    if re.search(r"(^|\s)\(?[A-D][\.\):]\s", question) and re.search(r"\bB[\.\):]\s", question):
        raise ReplyError(f"'question' contains the options; put them only in '{options_key}'")
    return question


def _choices(obj: dict, cfg: AugmentConfig, key: str, fold) -> tuple[list[str], list[str]]:
    """The four option texts under ``key`` (an object with keys A-D) in letter order, and
    their ``fold``-ed forms, which must be distinct."""
    opts = obj[key]
    if not isinstance(opts, dict):
        raise ReplyError(
            f"'{key}' must be an object with keys A, B, C, D, got {type(opts).__name__}"
        )
    _exact_keys(opts, LETTERS, f"'{key}'")
    choices = [_text(opts, k, cfg.option_max_words) for k in LETTERS]
    folded = [fold(c) for c in choices]
    if len(set(folded)) != 4:
        raise ReplyError(f"the four {key} must be distinct, got {choices}")
    return choices, folded


def _answer(obj: dict) -> str:
    answer = obj["answer"]
    if not isinstance(answer, str) or answer.strip() not in LETTERS:
        raise ReplyError(f"'answer' must be one of the letters A, B, C, D, got {answer!r}")
    return answer.strip()


VALIDATORS = {"caption": validate_caption, "qa": validate_qa}
DETAIL_KEYS = ("detail_prompt", "detail prompt")
"""The detail prompt's key: ours, or the figures' spelling with a space (one, not both)."""
_YES_NO = {"yes", "no", "true", "false"}


def validate_quadruple(obj: dict, cfg: AugmentConfig) -> dict:
    """The one-reply form of PairUni Figs. 10 and 11: ``{"question", "choices": {A, B, C,
    D}, "answer": one of A-D, "detail_prompt": ~30 words}`` (``"detail prompt"``, the
    figures' key, is accepted too). The question must not hold the options, the choices
    must be distinct and must not be a yes/no pair. Returns question, choices (the four
    texts in letter order), answer and prompt (the detail prompt)."""
    detail = [k for k in DETAIL_KEYS if k in obj]
    if len(detail) > 1:
        raise ReplyError(f"give the detail prompt once, as 'detail_prompt', not as {detail}")
    key = detail[0] if detail else "detail_prompt"
    _exact_keys(obj, ["question", "choices", "answer", key])
    question = _question(obj, cfg, "choices")
    choices, folded = _choices(
        obj, cfg, "choices", lambda c: re.sub(r"[^\w]+", " ", c.casefold()).strip()
    )
    if len(_YES_NO & set(folded)) >= 2:
        raise ReplyError(
            f"a yes/no question (choices {choices}); ask about visual properties with four "
            "look-alike options instead"
        )
    answer = _answer(obj)
    prompt = _text(obj, key, cfg.caption_max_words, cfg.caption_min_words)
    return {"question": question, "choices": choices, "answer": answer, "prompt": prompt}


def validate_reply(
    task: str, content: str | None, cfg: AugmentConfig, *, reply: str = "task", item: str = ""
) -> dict:
    """Parse and validate one reply for ``task`` (caption | qa); raises ``ReplyError``,
    naming ``item`` (e.g. its id and image ref) when given.

    ``reply`` is the template's form. ``task``: the task's own half (caption ->
    ``{"prompt"}``, qa -> question, choices, answer). ``quadruple`` (Figs. 10, 11): the whole
    object, returned as the task's half plus the other half under its own name (caption ->
    ``{"prompt", "generated_qa": {question, choices, answer}}``; qa -> ``{question, choices,
    answer, "generated_prompt"}``); only the task's half completes a pair."""
    if task not in VALIDATORS:
        raise ValueError(f"unknown augmentation task {task!r}; valid: {sorted(VALIDATORS)}")
    try:
        obj = parse_json_reply(content)
        if reply == "task":
            return VALIDATORS[task](obj, cfg)
        if reply != "quadruple":
            raise ValueError(f"unknown reply form {reply!r}; valid: task, quadruple")
        q = validate_quadruple(obj, cfg)
    except ReplyError as e:
        if item and not e.item:
            raise ReplyError(e.problem, item) from None
        raise
    qa = {"question": q["question"], "choices": q["choices"], "answer": q["answer"]}
    if task == "caption":
        return {"prompt": q["prompt"], "generated_qa": qa}
    return {**qa, "generated_prompt": q["prompt"]}


# ----------------------------------------------------------------------------- cache


def cache_key(item: str, template_id: str, model: str) -> str:
    """Key of one answer: sha256 of (item id, template version, model)."""
    return hashlib.sha256(json.dumps([item, template_id, model]).encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of final outcomes (completed or rejected), one line per item.

    A line is written and flushed as soon as an item is final, so a crash loses at most
    the items in flight; a torn last line is skipped on load. Transport failures are not
    final and are not cached (a re-run retries them). ``path`` None: no cache.
    """

    def __init__(self, cache_dir: str | None):
        self.path = Path(cache_dir) / "answers.jsonl" if cache_dir else None
        self.records: dict[str, dict] = {}
        self.skipped_lines = 0
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1
            if self.skipped_lines:
                logger.warning(
                    "%s: skipped %d unreadable lines (an interrupted write)",
                    self.path,
                    self.skipped_lines,
                )
        self._fh = None

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, rec: dict) -> None:
        self.records[rec["key"]] = rec
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.is_file() and self.path.stat().st_size > 0
            if torn:
                with open(self.path, "rb") as fh:
                    fh.seek(-1, 2)
                    torn = fh.read(1) != b"\n"
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            if torn:
                self._fh.write("\n")
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ----------------------------------------------------------------------------- quadruples


def quadruple_line(rec: dict) -> dict:
    """The quadruples.jsonl line of a completed outcome record."""
    keep = ("item_id", "side", "image_ref", "template", "model", "variant")
    return {**{k: rec[k] for k in keep}, **rec["result"]}


def rejection_line(rec: dict) -> dict:
    """The rejected.jsonl line of an outcome that completed nothing."""
    keep = ("item_id", "side", "image_ref", "template", "model", "variant", "stage", "reason")
    return {**{k: rec.get(k) for k in keep}, "raw": (rec.get("raw") or "")[:2000]}


_REQUIRED = {
    "und": {"prompt": str},
    "gen": {"question": str, "choices": list, "answer": str},
}


def load_quadruples(paths: Sequence[str]) -> dict[str, dict]:
    """item_id -> quadruple line, from quadruples.jsonl files (a later line wins). A bad
    line names the file, the line and the field."""
    out: dict[str, dict] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"pairing.quadruples: {p} not found. Fix: run `pairuni augment` first, or "
                "point pairing.quadruples at its <augment.output_dir>/quadruples.jsonl"
            )
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p} line {n}: not valid JSON ({e.msg})") from e
            side = rec.get("side") if isinstance(rec, dict) else None
            if side not in _REQUIRED:
                raise DataError(f"{p} line {n}: field 'side': {side!r} is not und or gen")
            for key, typ in {"item_id": str, **_REQUIRED[side]}.items():
                if not isinstance(rec.get(key), typ) or not rec[key]:
                    raise DataError(f"{p} line {n}: field {key!r}: missing or not a {typ.__name__}")
            if side == "gen" and (len(rec["choices"]) != 4 or rec["answer"] not in LETTERS):
                raise DataError(
                    f"{p} line {n}: field 'choices'/'answer': need four choices and a letter A-D"
                )
            out[rec["item_id"]] = rec
    return out


def complete_pairs(
    pairs: Sequence, quads: dict[str, dict], und_items: Sequence, gen_items: Sequence
) -> tuple[list, dict]:
    """Fill the missing half of aligned pairs from ``quads`` (``load_quadruples``).

    An aligned pair from an understanding item (needs generation) takes the detail prompt
    as its caption C; one from a generation item (needs understanding) takes the question,
    the four options and the answer letter (``und_source`` 'augmented'). Pairs whose item
    is not in ``quads`` keep ``needs_augmentation``. Returns (pairs, counts).
    """
    und_by_ref = {u.image_ref: u for u in und_items}
    gen_by_ref = {g.image_ref: g for g in gen_items}
    out, done, missing = [], 0, 0
    for p in pairs:
        if p.kind != "aligned" or p.needs_augmentation is None:
            out.append(p)
            continue
        if p.needs_augmentation == "generation":
            u = und_by_ref[p.und_image]
            rec = quads.get(item_id("und", u.image, item_text("und", u)))
            if rec is not None:
                p = dataclasses.replace(p, prompt=rec["prompt"], needs_augmentation=None)
        else:
            g = gen_by_ref[p.gen_image]
            rec = quads.get(item_id("gen", g.image, item_text("gen", g)))
            if rec is not None:
                p = dataclasses.replace(
                    p,
                    question=rec["question"],
                    choices=tuple(rec["choices"]),
                    answer=rec["answer"],
                    und_source="augmented",
                    needs_augmentation=None,
                )
        done += rec is not None
        missing += rec is None
        out.append(p)
    return out, {"completed": done, "still_needs_augmentation": missing}
