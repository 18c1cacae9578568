"""POPE-schema fixtures for the evaluation lane: eight coloured images with yes / no
questions, written as lmms-eval's POPE dataset is laid out (its columns, an ``Image``
feature). ``python pope_fixture.py OUT.parquet`` writes it (for tests in the main
environment, which has no ``datasets``)."""

from __future__ import annotations

import sys

import numpy as np

POST_PROMPT = "\nAnswer the question using a single word or phrase."  # POPE's default post_prompt
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "cyan": (30, 220, 220),
    "pink": (240, 120, 200),
}
TAUGHT = ["yes", "yes", "no", "yes", "no", "no", "yes", "no"]
TRUTH = ["yes", "no", "no", "yes", "yes", "no", "yes", "no"]  # items 1 and 4 disagree


def items():
    out = []
    for name, rgb in COLOURS.items():
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = rgb
        img[16:48, 16:48] = (255 - np.array(rgb)).astype(np.uint8)  # a square, inverted
        out.append((img, f"Is there a {name} object in the image?"))
    return out


def write_pope_parquet(path, items):
    import datasets
    from PIL import Image

    feats = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question_id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "image_source": datasets.Value("string"),
            "image": datasets.Image(),
            "category": datasets.Value("string"),
        }
    )
    rows = {
        "id": [str(i) for i in range(len(items))],
        "question_id": [str(i + 1) for i in range(len(items))],
        "question": [q for _, q in items],
        "answer": TRUTH,
        "image_source": [f"toy_{i}" for i in range(len(items))],
        "image": [Image.fromarray(img) for img, _ in items],
        "category": ["adversarial"] * len(items),
    }
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(path))


if __name__ == "__main__":
    write_pope_parquet(sys.argv[1], items())
