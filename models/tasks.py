"""The two tasks of a unified model, named once.

Every package that tells understanding from generation uses ``Task``: rollouts carry it,
losses group tokens by its ``id``, metrics use its ``value`` ("und" / "gen"), the DSR wire
format uses its ``display`` name, and advantage groups are keyed by ``group_key``. A new
task (DSR's captioning, say) is one more member here.

``Task`` is a ``str`` enum: ``Task.UND == "und"``, so configs, metrics keys and JSON keep
the short names they always had.
"""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    UND = "und"
    """Understanding: image + question -> answer text."""
    GEN = "gen"
    """Generation: prompt -> image tokens."""

    @property
    def id(self) -> int:
        """Dense integer id (0, 1, ...), the task index of the losses' task-token-mean."""
        return _IDS[self]

    @property
    def display(self) -> str:
        """The long name: understanding | generation (the DSR endpoint's ``task`` field)."""
        return _DISPLAY[self]

    @classmethod
    def parse(cls, value: object, where: str = "task") -> Task:
        """A task from its short name, long name or id; ValueError naming ``where``."""
        for t in cls:
            if value in (t, t.value, t.display) or (type(value) is int and value == t.id):
                return t
        valid = [t.value for t in cls] + [t.display for t in cls]
        raise ValueError(f"{where}: {value!r} is not a task; valid: {valid}")


TASKS: tuple[Task, ...] = tuple(Task)
"""Every task, in id order."""
_IDS = {t: i for i, t in enumerate(TASKS)}
_DISPLAY = {Task.UND: "understanding", Task.GEN: "generation"}


def group_key(pair_id: int, task: Task | str) -> int:
    """The id of a (pair, task) group: advantages normalise and SimPO pairs within it."""
    return int(pair_id) * len(TASKS) + Task.parse(task).id
