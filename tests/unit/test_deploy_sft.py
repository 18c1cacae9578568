"""`pairuni sft`: the NLL of both tasks falls on a small PairUG manifest, and the result loads."""

from __future__ import annotations

import json

import pytest

from deploy.config import RunConfig, load_config
from models.config import ConfigError
from pairing.synthetic import colour_square_manifest


def test_sft_section_is_validated():
    with pytest.raises(ConfigError, match=r"sft\.steps=0"):
        load_config(RunConfig, None, ["sft.steps=0"])
    with pytest.raises(ConfigError, match=r"quickstart\.tiny_hidden=100"):
        load_config(RunConfig, None, ["quickstart.tiny_hidden=100"])


def test_sft_lowers_nll_and_exports(tmp_path):
    from deploy.sft import run_sft
    from models import load_unified_model

    manifest = colour_square_manifest(tmp_path / "data")  # 4 pairs: colour question + prompt
    cfg = load_config(
        RunConfig,
        None,
        [
            f"run.root={tmp_path}",
            "run.name=sft",
            f"sft.manifest={manifest}",
            "sft.steps=12",
            "sft.pairs_per_step=4",
            "sft.lr=3e-3",
            "learner.zero_stage=0",
        ],
    )
    path = run_sft(cfg)
    rows = [
        json.loads(x) for x in (tmp_path / "sft" / "sft" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 12
    # the same 4 examples every step: memorising them must lower both tasks' NLL a lot
    # (measured: und 6.3 -> ~0.5, gen 5.5 -> ~3.8 nats per token in 12 steps)
    nll = {t: (rows[0][f"sft/nll_{t}"], rows[-1][f"sft/nll_{t}"]) for t in ("und", "gen")}
    assert nll["und"][1] < 0.5 * nll["und"][0], nll
    assert nll["gen"][1] < nll["gen"][0] - 1.0, nll
    m = load_unified_model(path)
    assert m.num_image_tokens == 16
    assert (tmp_path / "sft" / "sft" / "curves.png").is_file()


def test_showo_sft_trains_masked_codes_and_repeats(tmp_path):
    # Show-o's supervised image loss draws masks from a generator seeded by (run.seed, step):
    # a second, shorter run repeats the first one's steps exactly; memorising 4 images lowers
    # the masked codes' NLL.
    from deploy.sft import run_sft

    manifest = colour_square_manifest(tmp_path / "data")

    def run(name: str, steps: int) -> list[dict]:
        over = [f"run.root={tmp_path}", f"run.name={name}", f"sft.manifest={manifest}",
                f"sft.steps={steps}", "sft.pairs_per_step=4", "sft.lr=3e-3",
                "learner.zero_stage=0", "model.arch=showo"]  # fmt: skip
        run_sft(load_config(RunConfig, None, over))
        text = (tmp_path / name / "sft" / "metrics.jsonl").read_text()
        rows = [json.loads(x) for x in text.splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    long, short = run("a", 12), run("b", 3)
    assert short == long[:3]
    first, last = (sum(r["sft/nll_gen"] for r in rows) / 3 for rows in (long[:3], long[-3:]))
    assert last < first - 1.0, (first, last)  # measured: ~5.5 -> ~3 nats per masked code
