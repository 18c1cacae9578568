"""The toy world: coloured shapes on a 4 x 4 grid of cells, small enough for the tiny Janus
to learn in minutes, written in the formats the real readers take.

    pairuni toyworld --out runs/quickstart/world [--seed 0]

An image is 64 x 64 px: a 4 x 4 grid of flat 16 x 16 px cells (one cell per VQ token of the
tiny model, so the world lives at the model's own resolution), on a white or black
background. Colours are corners of the RGB cube (``models.palette_vq.PALETTE``).

* object scenes: one shape (dot = 1 cell, line = 3 in a row, square = 2 x 2, cross = 5
  cells) in one colour, placed so that its centroid is in one quadrant;
* count scenes: 1-4 dots of one colour, one per quadrant, no two touching.

Understanding items are four-option questions (colour, shape, position = quadrant, count);
generation items are prompts "a red cross in the top left on a black background" (object
scenes). Both sides draw from the same scenes, so k-means puts them in shared clusters
(aligned pairs) and retrieval finds look-alikes (retrieved pairs).

Held-out sets never meet training: understanding is split by image (an image is in the
training files or in the held-out file, not both), generation by prompt (a held-out prompt
is a combination of colour, shape, quadrant and background the training prompts never say).

Files (``write_world``): ``und_train.parquet`` / ``und_eval.parquet`` (verl/Orsta layout:
chat ``prompt`` with ``<image>`` and the options as ``A. red`` lines, ``images`` [{bytes}],
``reward_model`` {ground_truth, verifier}, ``data_source``, ``ability``),
``gen_train.tar`` / ``gen_eval.tar`` (webdataset: ``<key>.png`` + ``<key>.txt``),
``scenes.jsonl`` (every image's scene, for the augmentation of aligned pairs) and
``pairing.yaml`` (the `pairuni pair` config for these files).

Deterministic: the same seed writes byte-identical files.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GRID = 4
"""Cells per image side."""
COLOURS = ("red", "green", "blue", "yellow")
"""Shape colours (the options of colour questions, in this order)."""
BACKGROUNDS = ("white", "black")
SHAPES = ("dot", "line", "square", "cross")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
COUNTS = ("one", "two", "three", "four")
QUESTIONS = {
    "colour": ("What colour is the shape?", COLOURS),
    "shape": ("What shape is in the image?", SHAPES),
    "position": ("Where is the shape?", QUADRANTS),
    "count": ("How many dots are there?", COUNTS),
}
"""Category -> (question, options in order); the answer is the option's letter."""
LETTERS = "ABCD"
PROMPT = re.compile(
    r"^an? (?P<colour>\w+) (?P<shape>\w+) in the (?P<quadrant>(?:top|bottom) (?:left|right)) "
    r"on an? (?P<background>\w+) background$"
)
"""The generation prompts' grammar (``prompt_of`` writes it, the toy judge reads it)."""

Cells = tuple[tuple[int, int], ...]


def _rgb(name: str) -> np.ndarray:
    from models.palette_vq import PALETTE  # here: the module imports torch, the toy judge not

    return ((np.asarray(PALETTE[name], np.float32) + 1) * 127.5).astype(np.uint8)


def shape_placements(shape: str) -> list[Cells]:
    """Every placement of ``shape`` on the grid (lines in both orientations), as sorted cells."""
    base = {
        "dot": [((0, 0),)],
        "line": [((0, 0), (0, 1), (0, 2)), ((0, 0), (1, 0), (2, 0))],
        "square": [((0, 0), (0, 1), (1, 0), (1, 1))],
        "cross": [((0, 1), (1, 0), (1, 1), (1, 2), (2, 1))],
    }[shape]
    out = []
    for cells in base:
        h = max(r for r, _ in cells) + 1
        w = max(c for _, c in cells) + 1
        for dr in range(GRID - h + 1):
            for dc in range(GRID - w + 1):
                out.append(tuple(sorted((r + dr, c + dc) for r, c in cells)))
    return out


def quadrant_of(cells: Iterable[tuple[int, int]]) -> str | None:
    """Quadrant of the cells' centroid (cell centres at index + 0.5); None on a midline."""
    cells = list(cells)
    if not cells:
        return None
    r = np.mean([a for a, _ in cells]) + 0.5
    c = np.mean([b for _, b in cells]) + 0.5
    if r == GRID / 2 or c == GRID / 2:
        return None
    return f"{'top' if r < GRID / 2 else 'bottom'} {'left' if c < GRID / 2 else 'right'}"


@dataclass(frozen=True)
class Scene:
    """One image: a background, a colour, and the cells that colour fills."""

    background: str
    colour: str
    shape: str
    """dot | line | square | cross (count scenes: dot)."""
    cells: Cells
    count: int = 1
    """Dots in a count scene; 1 for an object scene."""
    kind: str = "object"
    """object | count."""

    @property
    def quadrant(self) -> str | None:
        return quadrant_of(self.cells) if self.kind == "object" else None

    @property
    def key(self) -> str:
        """Identity of the image (two scenes with one key render the same pixels)."""
        cells = "".join(f"{r}{c}" for r, c in self.cells)
        return f"{self.background[0]}{self.colour}-{cells}"


def render(scene: Scene) -> np.ndarray:
    """uint8 ``[64, 64, 3]``: background, then the scene's cells in its colour."""
    labels = np.full((GRID, GRID, 3), _rgb(scene.background), np.uint8)
    for r, c in scene.cells:
        labels[r, c] = _rgb(scene.colour)
    from models.palette_vq import CELL

    return labels.repeat(CELL, 0).repeat(CELL, 1)


def object_scenes() -> list[Scene]:
    """Every object scene whose quadrant is defined, in a fixed order."""
    out = []
    for bg in BACKGROUNDS:
        for colour in COLOURS:
            for shape in SHAPES:
                for cells in shape_placements(shape):
                    if quadrant_of(cells) is not None:
                        out.append(Scene(bg, colour, shape, cells))
    return out


def count_scene(rng: np.random.Generator) -> Scene:
    """1-4 dots of one colour, one per quadrant (random cell in it), no two 4-adjacent."""
    k = int(rng.integers(1, 5))
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    quads = rng.permutation(4)[:k]
    while True:
        cells = []
        for q in quads:
            r0, c0 = 2 * (int(q) // 2), 2 * (int(q) % 2)
            cells.append((r0 + int(rng.integers(2)), c0 + int(rng.integers(2))))
        if all(
            abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1 for i, a in enumerate(cells) for b in cells[:i]
        ):
            return Scene(bg, colour, "dot", tuple(sorted(cells)), count=k, kind="count")


def prompt_of(scene: Scene) -> str:
    """The generation prompt of an object scene."""
    if scene.kind != "object":
        raise ValueError(f"only object scenes have generation prompts, got a {scene.kind} scene")
    return (
        f"a {scene.colour} {scene.shape} in the {scene.quadrant} on a {scene.background} background"
    )


def question_of(scene: Scene, category: str) -> tuple[str, str]:
    """(question text with its ``A. option`` lines, answer letter) for ``category``."""
    question, options = QUESTIONS[category]
    truth = {
        "colour": scene.colour,
        "shape": scene.shape,
        "position": scene.quadrant,
        "count": COUNTS[scene.count - 1],
    }[category]
    lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return f"{question}\n{lines}", LETTERS[options.index(truth)]


def categories_of(scene: Scene) -> tuple[str, ...]:
    return ("count",) if scene.kind == "count" else ("colour", "shape", "position")


# ----------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class WorldSize:
    """How many items each file holds."""

    und_train: int = 600
    und_eval: int = 200
    gen_train: int = 240
    gen_eval: int = 32
    eval_fraction: float = 0.25
    """Share of object images (und) and of prompts (gen) held out."""
    count_share: float = 0.2
    """Share of understanding items that are count questions."""


@dataclass(frozen=True)
class UndRecord:
    scene: Scene
    category: str
    question: str
    answer: str


def build_world(seed: int = 0, size: WorldSize = WorldSize()) -> dict[str, list]:
    """The four item lists (und_train, und_eval: ``UndRecord``; gen_train, gen_eval: ``Scene``)."""
    rng = np.random.default_rng(seed)
    scenes = object_scenes()
    order = rng.permutation(len(scenes))
    n_eval = round(size.eval_fraction * len(scenes))
    eval_keys = {scenes[i].key for i in order[:n_eval]}
    img_pool = {"train": [s for s in scenes if s.key not in eval_keys]}
    img_pool["eval"] = [s for s in scenes if s.key in eval_keys]
    prompts = sorted({prompt_of(s) for s in scenes})
    p_order = rng.permutation(len(prompts))
    n_eval_p = round(size.eval_fraction * len(prompts))
    eval_prompts = {prompts[i] for i in p_order[:n_eval_p]}

    def und_items(split: str, n: int) -> list[UndRecord]:
        out: list[UndRecord] = []
        seen_counts = set() if split == "train" else set(train_count_keys)
        while len(out) < n:
            if rng.random() < size.count_share:
                s = count_scene(rng)
                if split == "eval" and s.key in seen_counts:
                    continue  # a held-out count image is never a training image
                if split == "train":
                    train_count_keys.add(s.key)
            else:
                pool = img_pool[split]
                s = pool[int(rng.integers(len(pool)))]
            cats = categories_of(s)
            cat = cats[int(rng.integers(len(cats)))]
            q, a = question_of(s, cat)
            out.append(UndRecord(s, cat, q, a))
        return out

    train_count_keys: set[str] = set()
    und_train = und_items("train", size.und_train)
    und_eval = und_items("eval", size.und_eval)
    gen_train_pool = [s for s in scenes if prompt_of(s) not in eval_prompts]
    gen_train = [
        gen_train_pool[int(i)] for i in rng.integers(len(gen_train_pool), size=size.gen_train)
    ]
    # held out: one image per held-out prompt (the first placement), as many as asked
    by_prompt: dict[str, Scene] = {}
    for s in scenes:
        by_prompt.setdefault(prompt_of(s), s)
    held = sorted(eval_prompts)
    gen_eval = [by_prompt[held[int(i)]] for i in rng.permutation(len(held))[: size.gen_eval]]
    return {
        "und_train": und_train,
        "und_eval": und_eval,
        "gen_train": gen_train,
        "gen_eval": gen_eval,
    }


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_und(records: list[UndRecord], path: Path, source: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "prompt": [{"role": "user", "content": f"<image>{r.question}"}],
            "images": [{"bytes": _png(render(r.scene))}],
            "reward_model": {"ground_truth": r.answer, "verifier": "choice"},
            "data_source": source,
            "ability": r.category,
        }
        for r in records
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return [
        {"file": path.name, "row": str(i), **_scene_json(r.scene)} for i, r in enumerate(records)
    ]


def _write_gen(scenes: list[Scene], path: Path) -> list[dict]:
    index = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, s in enumerate(scenes):
            key = f"{i:06d}"
            for ext, data in (("png", _png(render(s))), ("txt", prompt_of(s).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
            index.append({"file": path.name, "row": f"{key}.png", **_scene_json(s)})
    return index


def _scene_json(s: Scene) -> dict:
    d = asdict(s)
    d["cells"] = [list(c) for c in s.cells]
    return d


def scene_from_json(d: dict) -> Scene:
    return Scene(
        d["background"],
        d["colour"],
        d["shape"],
        tuple(tuple(c) for c in d["cells"]),
        d.get("count", 1),
        d.get("kind", "object"),
    )


def write_world(out_dir: str | Path, seed: int = 0, size: WorldSize = WorldSize()) -> dict:
    """Write the toy world's files under ``out_dir``; returns their paths and item counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = build_world(seed, size)
    index = _write_und(w["und_train"], out / "und_train.parquet", "toyworld")
    index += _write_und(w["und_eval"], out / "und_eval.parquet", "toyworld-heldout")
    index += _write_gen(w["gen_train"], out / "gen_train.tar")
    index += _write_gen(w["gen_eval"], out / "gen_eval.tar")
    with (out / "scenes.jsonl").open("w") as f:
        for row in index:
            f.write(json.dumps(row) + "\n")
    info = {
        "seed": seed,
        "und_train": str(out / "und_train.parquet"),
        "und_eval": str(out / "und_eval.parquet"),
        "gen_train": str(out / "gen_train.tar"),
        "gen_eval": str(out / "gen_eval.tar"),
        "scenes": str(out / "scenes.jsonl"),
        "counts": {k: len(v) for k, v in w.items()},
    }
    (out / "world.json").write_text(json.dumps(info, indent=2))
    return info


def write_dsr_world(out_dir: str | Path, seed: int = 0, n: int = 6) -> dict:
    """DSR's unpaired formats (DSR section 4.1) from toy scenes, under ``out_dir``:
    T2I-CompBench prompt files (``t2i/color_train.txt``, ``t2i/spatial_train.txt``: one
    prompt a line), COCO captions (``coco/annotations/captions_train2017.json`` +
    ``coco/train2017/``) and JourneyDB (``journeydb/train_anno_realease_repath.jsonl`` +
    ``journeydb/imgs/000/``), ``n`` items each. Returns the ``pairing.unpaired`` settings
    that read them."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    scenes = object_scenes()
    picks = [scenes[int(i)] for i in rng.permutation(len(scenes))[: 3 * n]]
    t2i = out / "t2i"
    t2i.mkdir(parents=True, exist_ok=True)
    half = n // 2
    (t2i / "color_train.txt").write_text("".join(prompt_of(s) + "\n" for s in picks[:half]))
    (t2i / "spatial_train.txt").write_text("".join(prompt_of(s) + "\n" for s in picks[half:n]))
    coco = out / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    (coco / "train2017").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, s in enumerate(picks[n : 2 * n]):
        name = f"{i + 1:012d}.png"
        (coco / "train2017" / name).write_bytes(_png(render(s)))
        images.append({"id": i + 1, "file_name": name, "width": 64, "height": 64})
        anns.append({"id": 100 + i, "image_id": i + 1, "caption": prompt_of(s)})
    captions = coco / "annotations" / "captions_train2017.json"
    captions.write_text(json.dumps({"images": images, "annotations": anns}))
    jdb = out / "journeydb"
    (jdb / "imgs" / "000").mkdir(parents=True, exist_ok=True)
    with (jdb / "train_anno_realease_repath.jsonl").open("w") as fh:
        for i, s in enumerate(picks[2 * n : 3 * n]):
            rel = f"./000/{i:08x}.png"
            (jdb / "imgs" / rel).write_bytes(_png(render(s)))
            row = {"img_path": rel, "prompt": f"{prompt_of(s)}, flat colours --ar 1:1"}
            row["Task2"] = {"Caption": prompt_of(s)}
            fh.write(json.dumps(row) + "\n")
    return {
        "prompts": [str(t2i / "color_train.txt"), str(t2i / "spatial_train.txt")],
        "coco_captions": [str(captions)],
        "coco_image_root": str(coco / "train2017"),
        "journeydb": [str(jdb / "train_anno_realease_repath.jsonl")],
    }


# ----------------------------------------------------------------------------- augmentation


def _ref_key(ref: str) -> tuple[str, str]:
    """(file name, row or tar member) of an image ref written by the readers."""
    path, _, frag = ref.partition("#")
    if frag.startswith("row="):
        frag = frag.split("&", 1)[0].removeprefix("row=")
    return Path(path).name, frag


def load_scenes(world_dir: str | Path) -> dict[tuple[str, str], Scene]:
    """(file name, row or member) -> scene, from ``scenes.jsonl``."""
    out = {}
    for line in (Path(world_dir) / "scenes.jsonl").read_text().splitlines():
        d = json.loads(line)
        out[(d["file"], d["row"])] = scene_from_json(d)
    return out


def complete_aligned(manifest: str, world_dir: str | Path, out: str, seed: int = 0) -> dict:
    """The augmentation step of the toy world: fill the half an aligned pair lacks.

    PairUni completes each aligned medoid to a quadruple (I, C, Q, A) with a strong
    captioner; in the toy world the scene is known, so the caption is ``prompt_of`` and the
    question one of ``categories_of`` (drawn by ``seed`` and the pair id). A count scene has
    no caption in this world's grammar and keeps ``needs_augmentation='generation'``.
    Writes ``out``; returns counts of what was filled.
    """
    from dataclasses import replace

    from pairing.datasets import parse_choices
    from pairing.manifest import read_manifest, write_manifest

    scenes = load_scenes(world_dir)
    pairs, filled = [], {"understanding": 0, "generation": 0, "left": 0}
    for p in read_manifest(manifest):
        need = p.needs_augmentation
        if need is None:
            pairs.append(p)
            continue
        ref = p.und_image if need == "generation" else p.gen_image
        key = _ref_key(ref)
        if key not in scenes:
            raise KeyError(
                f"{manifest}: pair {p.pair_id}: image {ref} is not in {world_dir}/scenes.jsonl"
            )
        s = scenes[key]
        if need == "generation" and s.kind == "object":
            p = replace(p, prompt=prompt_of(s), needs_augmentation=None)
        elif need == "understanding":
            cats = categories_of(s)
            rng = np.random.default_rng([seed, p.pair_id])
            cat = cats[int(rng.integers(len(cats)))]
            q, a = question_of(s, cat)
            p = replace(
                p,
                question=q,
                choices=parse_choices(q),
                answer=a,
                category=cat,
                und_source="toyworld-augment",
                verifier="choice",
                needs_augmentation=None,
            )
        else:
            filled["left"] += 1
            pairs.append(p)
            continue
        filled[need] += 1
        pairs.append(p)
    write_manifest(pairs, out)
    return filled


def add_toyworld_command(subparsers) -> None:
    """Register `toyworld` on the `pairuni` sub-parsers."""
    p = subparsers.add_parser("toyworld", help="write the toy world (U parquet, G tar, held-out)")
    p.add_argument("--out", required=True, help="directory to write the files into")
    p.add_argument("--seed", type=int, default=0, help="world seed (same seed, same bytes)")
    p.add_argument(
        "--dsr",
        action="store_true",
        help="also write DSR's unpaired formats (T2I-CompBench, COCO, JourneyDB) under OUT/dsr",
    )

    def run(args) -> None:
        info = write_world(args.out, args.seed)
        if args.dsr:
            info["dsr"] = write_dsr_world(Path(args.out) / "dsr", args.seed)
        print(json.dumps(info, indent=2))

    p.set_defaults(func=run)


def write_dsr_manifest(out_dir: str | Path, seed: int = 0, n: int = 4) -> str:
    """``write_dsr_world`` under ``out_dir/world``, read by ``pairuni pair
    pairing.mode=unpaired`` into ``out_dir/pairs/manifest.parquet`` (returned): n prompts and
    2n images (n COCO, n JourneyDB), each its own item."""
    from pairing.cli import run_pair
    from pairing.config import PairingConfig, UnpairedSources

    out = Path(out_dir)
    world = write_dsr_world(out / "world", seed=seed, n=n)
    src = UnpairedSources(
        prompts=tuple(world["prompts"]),
        coco_captions=tuple(world["coco_captions"]),
        coco_image_root=world["coco_image_root"],
        journeydb=tuple(world["journeydb"]),
    )
    cfg = PairingConfig(mode="unpaired", unpaired=src, output_dir=str(out / "pairs"))
    cfg.validate()
    run_pair(cfg, strict=True)
    return str(out / "pairs" / "manifest.parquet")
