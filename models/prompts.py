"""Prompt formats of Janus-Pro (the ``<|User|>`` / ``<|Assistant|>`` conversation format).

Understanding: the image placeholder, a newline and the question; the processor expands
the placeholder into ``<begin_of_image> <image>*N <end_of_image>``. Generation: the prompt,
then ``<begin_of_image>`` (appended here, so that the image tokens follow it directly).
"""

from __future__ import annotations

USER, ASSISTANT = "<|User|>", "<|Assistant|>"

# DSR's reversed likelihood for generation, R_G = mean log p(prompt | image), scores the
# prompt as the model's answer to this question about the generated image.
DESCRIBE_QUESTION = "Describe this image."


def understanding_prompt(question: str, image_token: str, system: str = "") -> str:
    """Conversation prefix for image + question -> answer; the answer follows it."""
    return f"{system}{USER}: {image_token}\n{question}\n\n{ASSISTANT}:"


def generation_prompt(prompt: str, boi_token: str, system: str = "") -> str:
    """Conversation prefix for text -> image; the image tokens follow ``boi_token``."""
    return f"{system}{USER}: {prompt}\n\n{ASSISTANT}:{boi_token}"


LETTERS = "ABCDEFGHIJ"


def format_choices(choices) -> str:
    """Options appended to a multiple-choice question: ``\\nA. red\\nB. blue ...`` + instruction."""
    if not choices:
        return ""
    lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n" + "\n".join(lines) + "\nAnswer with the option's letter."
