"""Readers for the understanding set U (verl/Orsta parquet) and the generation set G
(webdataset tar shards, or an image folder + JSONL).

Every input row ends up either as an item or as a ``ReadIssue`` naming the file, the row
(or tar key / JSONL line) and the field; nothing is dropped silently. ``strict=True`` turns
the first issue into a ``DataError``. A column missing from a whole file is a mapping
mistake, not bad data, and is always fatal.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from pairing.config import GenerationSource, UnderstandingSource


class DataError(ValueError):
    """Input data that cannot be read; the message names file, row and field."""


@dataclass(frozen=True)
class ReadIssue:
    """One input row that was skipped, and why."""

    file: str
    row: str
    """Row number (parquet), member key (tar) or line number (JSONL)."""
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row}: field {self.field!r}: {self.reason}"


@dataclass(frozen=True)
class UndItem:
    """One understanding instance (I, Q, A)."""

    image_ref: str
    """`<parquet>#row=<r>&column=<images field>&image=0`; ``load_image_ref`` reads it back."""
    image: bytes = field(repr=False)
    question: str
    choices: tuple[str, ...]
    """Multiple-choice option texts in letter order, parsed from the question's 'A. cat' lines
    (the question keeps them, as the data wrote it); empty otherwise."""
    answer: str
    """Reference answer as given (the letter for multiple choice)."""
    category: str
    source: str
    verifier: str


@dataclass(frozen=True)
class GenItem:
    """One generation instance (I, C)."""

    image_ref: str
    """`<shard.tar>#<member>` (webdataset) or the image file path (folder_jsonl)."""
    image: bytes = field(repr=False)
    prompt: str


@dataclass
class ReadResult:
    items: list
    issues: list[ReadIssue]
    rows: int
    """Input rows seen: len(items) + len(issues) + sum(excluded.values())."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Rows left out on purpose, per excluded kind (``pairing.und.exclude_kinds``; one
    entry per configured kind, zeros included). Not issues: the data is fine, the config
    says not to train on it."""


def describe_image_error(e: Exception) -> str:
    """'undecodable image (<type>: <message>)' without PIL's object addresses."""
    msg = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e)).strip()
    return f"undecodable image ({type(e).__name__}: {msg})"


def image_problem(data: bytes | None) -> str | None:
    """Why these bytes are not a readable image (None when they are)."""
    if not data:
        return "empty image bytes"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:
        return describe_image_error(e)
    return None


def expand_paths(patterns: tuple[str, ...] | list[str], key: str) -> list[str]:
    """Files named by paths or glob patterns, each pattern sorted; a pattern matching nothing
    is an error naming the config key."""
    out: list[str] = []
    for pat in patterns:
        hits = (
            sorted(glob.glob(pat))
            if glob.has_magic(pat)
            else ([pat] if os.path.isfile(pat) else [])
        )
        if not hits:
            raise DataError(
                f"{key}: {pat!r} matches no file. Fix: check the path "
                f"(relative paths are from {os.getcwd()})"
            )
        out.extend(hits)
    return out


class _Collector:
    def __init__(self, strict: bool):
        self.strict, self.items, self.issues = strict, [], []
        self.excluded: dict[str, int] = {}

    def issue(self, file: str, row, field_name: str, reason: str) -> None:
        iss = ReadIssue(str(file), str(row), field_name, reason)
        if self.strict:
            raise DataError(
                f"{iss} (strict mode; without --strict the row is skipped and reported)"
            )
        self.issues.append(iss)

    def result(self) -> ReadResult:
        rows = len(self.items) + len(self.issues) + sum(self.excluded.values())
        return ReadResult(self.items, self.issues, rows, dict(self.excluded))


# ----------------------------------------------------------------------------- understanding

_CHOICE = re.compile(r"^\s*\(?([A-J])\s*[\.\):：]\s*(.+?)\s*$")


def parse_choices(question: str) -> tuple[str, ...]:
    """Option texts of lines written 'A. text', '(B) text' or 'C: text', starting at A with
    consecutive letters ("A. red" gives "red"); fewer than two such lines: not multiple choice."""
    found: list[str] = []
    for line in question.splitlines():
        m = _CHOICE.match(line)
        if m and ord(m.group(1)) - ord("A") == len(found):
            found.append(m.group(2))
    return tuple(found) if len(found) >= 2 else ()


def question_with_choices(question: str, choices) -> str:
    """The question as the model sees it: the options appended (with the answer-format
    instruction) unless the question already lists them, as dataset questions do."""
    from models.prompts import format_choices

    if not choices or parse_choices(question):
        return question
    return question + format_choices(choices)


def decode_image_bytes(data: bytes, where: str):
    """Encoded image bytes -> uint8 RGB ``[H, W, 3]``; a ValueError names ``where``."""
    import numpy as np
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as e:  # PIL raises many types for bad bytes
        raise ValueError(f"{where}: image cannot be decoded ({type(e).__name__}: {e})") from e


def _get(row: dict, dotted: str):
    """row['a']['b'] for 'a.b'; KeyError names the missing part."""
    cur = row
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur or cur[part] is None:
            raise KeyError(part)
        cur = cur[part]
    return cur


def _question_text(prompt) -> str:
    """User text of a chat prompt (list of {role, content}) or a plain string, `<image>` removed."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list):
        parts = []
        for msg in prompt:
            if not isinstance(msg, dict) or msg.get("role", "user") != "user":
                continue
            content = msg.get("content")
            if isinstance(content, list):  # [{type: text, text: ...}, {type: image}]
                content = "\n".join(c.get("text") or "" for c in content if isinstance(c, dict))
            parts.append(content or "")
        text = "\n".join(parts)
    else:
        raise ValueError(f"expected chat messages or a string, got {type(prompt).__name__}")
    text = text.replace("<image>", "").strip()
    if not text:
        raise ValueError("no user text")
    return text


def _first_image(images) -> bytes:
    if isinstance(images, dict):
        images = [images]
    if isinstance(images, (bytes, bytearray)):
        return bytes(images)
    if not isinstance(images, list) or not images:
        raise ValueError("no image in the list")
    first = images[0]
    data = first.get("bytes") if isinstance(first, dict) else first
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ValueError("first image has no bytes")
    return bytes(data)


_WORD = re.compile(r"[^0-9a-z]+")


def excluded_kind(value, exclude: tuple[str, ...]) -> str | None:
    """The entry of ``exclude`` that the kind ``value`` names, or None. The value is split
    into lower-case words at every non-alphanumeric (``cv_detection`` -> cv, detection) and
    an entry matches when it is one of the words (or the whole value): ``detection``
    matches ``cv_detection`` and ``Detection`` but not ``v3det_train``."""
    if value is None or not exclude:
        return None
    text = str(value).strip().lower()
    words = set(_WORD.split(text)) | {text}
    for kind in exclude:
        if kind.strip().lower() in words:
            return kind
    return None


def read_understanding(src: UnderstandingSource, *, strict: bool = False) -> ReadResult:
    """U from verl/Orsta parquet files: question (user text), first image, answer, category,
    source, verifier, and the multiple-choice options parsed from the question.

    Rows whose ``kind_field`` names one of ``exclude_kinds`` are left out before anything
    else is read and counted in ``ReadResult.excluded`` (PairUni section 3.1 drops Orsta's
    detection and grounding items). A row without a kind value is kept."""
    import pyarrow.parquet as pq

    out = _Collector(strict)
    out.excluded = {k: 0 for k in src.exclude_kinds}
    required = {"prompt": src.prompt_field, "images": src.images_field, "answer": src.answer_field}
    optional = {
        "category": src.category_field,
        "source": src.source_field,
        "verifier": src.verifier_field,
    }
    kind_col = src.kind_field.split(".")[0]
    for path in expand_paths(src.paths, "pairing.und.paths"):
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        for what, dotted in required.items():
            if dotted.split(".")[0] not in names:
                raise DataError(
                    f"{path}: column {dotted.split('.')[0]!r} ({what}) not in the file "
                    f"(columns: {sorted(names)}). Fix: set pairing.und.{what}_field"
                )
        if src.exclude_kinds and kind_col not in names:
            raise DataError(
                f"{path}: column {kind_col!r} (pairing.und.kind_field={src.kind_field!r}) not "
                f"in the file (columns: {sorted(names)}), so pairing.und.exclude_kinds="
                f"{list(src.exclude_kinds)} cannot be applied. Fix: set pairing.und.kind_field "
                "to the column naming each row's task, or pairing.und.exclude_kinds=[] to keep "
                "every row"
            )
        wanted = (*required.values(), *optional.values(), src.kind_field)
        cols = sorted({d.split(".")[0] for d in wanted} & names)
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=cols):
            for rec in batch.to_pylist():
                try:
                    kind = excluded_kind(_get(rec, src.kind_field), src.exclude_kinds)
                except KeyError:
                    kind = None
                if kind is not None:
                    out.excluded[kind] += 1
                    row += 1
                    continue
                item = _und_item(rec, path, row, src, required, optional, out)
                if item is not None:
                    out.items.append(item)
                row += 1
    return out.result()


def _und_item(rec, path, row, src, required, optional, out: _Collector) -> UndItem | None:
    try:
        question = _question_text(_get(rec, required["prompt"]))
    except (KeyError, ValueError) as e:
        return out.issue(path, row, required["prompt"], f"missing or unreadable question ({e})")
    try:
        image = _first_image(_get(rec, required["images"]))
    except (KeyError, ValueError) as e:
        return out.issue(path, row, required["images"], f"missing image ({e})")
    problem = image_problem(image)
    if problem:
        return out.issue(path, row, required["images"], problem)
    try:
        answer = _get(rec, required["answer"])
    except KeyError:
        return out.issue(path, row, required["answer"], "missing answer")
    answer = answer if isinstance(answer, str) else json.dumps(answer)
    if not answer.strip():
        return out.issue(path, row, required["answer"], "empty answer")
    extra = {}
    for name, dotted in optional.items():
        try:
            extra[name] = str(_get(rec, dotted))
        except KeyError:
            extra[name] = ""
    ref = f"{path}#row={row}&column={src.images_field.split('.')[0]}&image=0"
    return UndItem(
        ref,
        image,
        question,
        parse_choices(question),
        answer.strip(),
        extra["category"],
        extra["source"],
        extra["verifier"],
    )


# ----------------------------------------------------------------------------- generation


def _tar_groups(path: str) -> Iterator[tuple[str, dict[str, tuple[str, bytes]]]]:
    """(key, {ext: (member name, bytes)}) per webdataset sample, in shard order; the key is
    the member path up to the first dot of its base name."""
    groups: dict[str, dict[str, tuple[str, bytes]]] = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            if not m.isfile():
                continue
            d, base = os.path.split(m.name)
            stem, _, ext = base.partition(".")
            key = os.path.join(d, stem)
            f = tar.extractfile(m)
            groups.setdefault(key, {})[ext.lower()] = (m.name, f.read() if f else b"")
    yield from groups.items()


def read_generation(src: GenerationSource, *, strict: bool = False) -> ReadResult:
    """G from webdataset shards (`<key>.jpg|png` + `<key>.txt`) or folder + JSONL rows."""
    out = _Collector(strict)
    for path in expand_paths(src.paths, "pairing.gen.paths"):
        if src.format == "webdataset":
            _read_shard(path, src, out)
        elif src.format == "folder_jsonl":
            _read_jsonl(path, src, out)
        else:
            raise DataError(f"pairing.gen.format={src.format!r}: valid: webdataset, folder_jsonl")
    return out.result()


def _read_shard(path: str, src: GenerationSource, out: _Collector) -> None:
    for key, members in _tar_groups(path):
        img = next((members[e] for e in src.image_exts if e in members), None)
        if img is None:
            out.issue(
                path,
                key,
                "image",
                f"no member with extension in {list(src.image_exts)} (found {sorted(members)})",
            )
            continue
        cap = members.get(src.caption_ext)
        prompt = cap[1].decode("utf-8", errors="replace").strip() if cap else ""
        if not prompt:
            out.issue(path, key, src.caption_ext, "missing or empty caption")
            continue
        problem = image_problem(img[1])
        if problem:
            out.issue(path, key, img[0], problem)
            continue
        out.items.append(GenItem(f"{path}#{img[0]}", img[1], prompt))


def jsonl_objects(path: str, out: _Collector):
    """``(line number, object)`` of each line of ``path`` that holds a JSON object; an empty
    line, invalid JSON or another JSON value is an issue of ``out`` naming the line."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                out.issue(path, n, "<line>", "empty line")
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                out.issue(path, n, "<line>", f"not valid JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                out.issue(path, n, "<line>", f"expected a JSON object, got {type(rec).__name__}")
                continue
            yield n, rec


def _read_jsonl(path: str, src: GenerationSource, out: _Collector) -> None:
    root = Path(src.image_root or os.path.dirname(path))
    for line_no, rec in jsonl_objects(path, out):
        rel, prompt = rec.get(src.image_field), rec.get(src.caption_field)
        if not isinstance(rel, str) or not rel:
            out.issue(path, line_no, src.image_field, "missing image path")
            continue
        if not isinstance(prompt, str) or not prompt.strip():
            out.issue(path, line_no, src.caption_field, "missing or empty caption")
            continue
        img_path = root / rel
        try:
            data = img_path.read_bytes()
        except OSError as e:
            out.issue(path, line_no, src.image_field, f"cannot read {img_path} ({e.strerror})")
            continue
        problem = image_problem(data)
        if problem:
            out.issue(path, line_no, src.image_field, f"{img_path}: {problem}")
            continue
        out.items.append(GenItem(str(img_path), data, prompt.strip()))


# ----------------------------------------------------------------------------- refs


def load_image_ref(ref: str) -> bytes:
    """Bytes of an image named by an item's ``image_ref`` (parquet row, tar member, file)."""
    path, sep, frag = ref.partition("#")
    if not sep:
        return Path(ref).read_bytes()
    if "row=" in frag and path.endswith(".parquet"):
        import pyarrow.parquet as pq

        q = {k: v[0] for k, v in parse_qs(frag).items()}
        row, col, idx = int(q["row"]), q["column"], int(q.get("image", 0))
        table = pq.read_table(path, columns=[col])
        images = table.column(col)[row].as_py()
        images = [images] if isinstance(images, dict) else images
        first = images[idx]
        return first["bytes"] if isinstance(first, dict) else first
    with tarfile.open(path, "r:*") as tar:
        f = tar.extractfile(frag)
        if f is None:
            raise DataError(f"{path}: member {frag!r} is not a file")
        return f.read()
