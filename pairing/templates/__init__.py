"""Versioned prompt templates of the quadruple augmentation (PairUni Appendix E, Figs. 10, 11).

Which figure does what (section 2.1.1 and the figures' own titles): Figure 10, the
"generation" prompt, takes a generation image and its class (one object, two objects,
text, AI-generated) and is what G's items are completed with (their Q and A); Figure 11,
the "understanding" prompt, takes an understanding image alone and is what U's items are
completed with (their C). Both ask for one JSON reply holding a question, four choices,
the answer letter and a ~30-word detail prompt.

A template is a YAML file: ``name``, ``version``, ``task`` (caption: an understanding image
needs C; qa: a generation image needs Q and A), ``system``, ``instruction`` (with
``{context}``, and ``{variant_hint}`` when the template has variants), optionally one hint
per image class in ``variants`` (one_object, two_objects, text, ai_generated; a template
without them says the same for every class), ``repair`` (with ``{error}``) and optionally
``reply``: ``quadruple`` (the figures' one-reply form, ``pairing.quadruples.validate_reply``)
or ``task`` (the default: caption -> ``{"prompt"}``, qa -> ``{"question", "options",
"answer"}``). Its id ``<name>@v<version>+<sha256[:8] of the file>`` enters the answer
cache's key, so editing a file never reuses answers written for the old wording.

Packaged: ``caption_v2`` (Fig. 11) and ``qa_v2`` (Fig. 10), the defaults. ``caption_v1`` and
``qa_v1`` are the first versions, kept byte-identical so their cached answers stay
addressable; their header comments name the figures the wrong way round (v1 called the
caption prompt Fig. 10 and the question prompt Fig. 11) and they ask for one half only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pairing.config import VARIANTS

TASKS = ("caption", "qa")
REPLY_FORMS = ("task", "quadruple")
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Template:
    """One parsed template file."""

    name: str
    version: int
    task: str
    """caption | qa."""
    system: str
    instruction: str
    variants: dict[str, str]
    """Hint per image class; empty: one text for every class."""
    repair: str
    path: str
    sha256: str
    reply: str = "task"
    """task (the task's own half only) | quadruple (question, choices, answer, detail_prompt)."""

    @property
    def id(self) -> str:
        """``<name>@v<version>+<hash>``: the template part of the cache key."""
        return f"{self.name}@v{self.version}+{self.sha256[:8]}"

    def user_text(self, variant: str, context: str) -> str:
        """The user turn's text for an item of class ``variant`` with dataset text ``context``."""
        hint = self.variants.get(variant, "")
        return self.instruction.format(variant_hint=hint, context=context or "(none)")

    def repair_text(self, error: str) -> str:
        """The re-ask after a rejected reply, quoting the validation error."""
        return self.repair.format(error=error)


def _fail(path: Path, key: str, problem: str) -> ValueError:
    return ValueError(f"{path}: template key {key!r}: {problem}")


def load_template(name_or_path: str) -> Template:
    """A packaged template by name (``caption_v1``) or a YAML file by path; every problem
    names the file and the key."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = HERE / f"{name_or_path}.yaml"
    if not p.is_file():
        packaged = sorted(f.stem for f in HERE.glob("*.yaml"))
        raise FileNotFoundError(
            f"augmentation template {name_or_path!r} not found (looked at {p}); "
            f"packaged templates: {packaged}, or give a path to a YAML file"
        )
    raw_bytes = p.read_bytes()
    data = yaml.safe_load(raw_bytes)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a template must be a YAML mapping")
    for key in ("name", "version", "task", "system", "instruction", "repair"):
        if key not in data:
            raise _fail(p, key, "missing")
    if data["task"] not in TASKS:
        raise _fail(p, "task", f"{data['task']!r} is not one of {TASKS}")
    if not isinstance(data["version"], int):
        raise _fail(p, "version", f"{data['version']!r} is not an integer")
    reply = data.get("reply", "task")
    if reply not in REPLY_FORMS:
        raise _fail(p, "reply", f"{reply!r} is not one of {REPLY_FORMS}")
    variants = data.get("variants") or {}
    if variants and (not isinstance(variants, dict) or sorted(variants) != sorted(VARIANTS)):
        got = sorted(variants) if isinstance(variants, dict) else variants
        raise _fail(p, "variants", f"must hold exactly {list(VARIANTS)}, got {got}")
    t = Template(
        name=str(data["name"]),
        version=data["version"],
        task=data["task"],
        system=str(data["system"]).strip(),
        instruction=str(data["instruction"]),
        variants={k: str(v).strip() for k, v in variants.items()},
        repair=str(data["repair"]),
        path=str(p),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        reply=reply,
    )
    for key, render in (
        ("instruction", lambda: t.user_text(VARIANTS[0], "x")),
        ("repair", lambda: t.repair_text("x")),
    ):
        try:
            render()
        except (KeyError, IndexError, ValueError) as e:
            raise _fail(
                p, key, f"bad placeholder ({e!r}); write literal braces as {{{{ and }}}}"
            ) from e
    if "{context}" not in t.instruction:
        raise _fail(p, "instruction", "must contain {context}")
    if bool(variants) != ("{variant_hint}" in t.instruction):
        raise _fail(
            p,
            "instruction",
            "must contain {variant_hint} when the template has variants, and only then",
        )
    if "{error}" not in t.repair:
        raise _fail(p, "repair", "must contain {error}")
    return t
