"""`pairuni pair` end to end on small parquet + tar data sets built here: manifest, report
accounting, --strict, feature cache on re-run, and the argparse entry with YAML overrides."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import yaml
from test_pairing_data import write_gen_jsonl, write_gen_tar, write_und_parquet

from pairing.cli import add_pair_command, load_pairing_config, run_pair
from pairing.config import FeatureConfig, GenerationSource, PairingConfig, UnderstandingSource
from pairing.datasets import DataError
from pairing.manifest import read_manifest


def _config(tmp_path, **kw) -> PairingConfig:
    cfg = PairingConfig(
        und=UnderstandingSource(paths=(str(tmp_path / "u.parquet"),)),
        gen=GenerationSource(paths=(str(tmp_path / "g-000.tar"),)),
        features=FeatureConfig(
            allow_random_weights=True,
            image_size=32,
            batch_size=8,
            cache_dir=str(tmp_path / "cache"),
        ),
        **{
            "num_clusters": 2,
            "neighbors": 1,
            "threshold": 0.5,
            "output_dir": str(tmp_path / "out"),
            **kw,
        },
    )
    cfg.validate()
    return cfg


@pytest.fixture
def data(tmp_path):
    write_und_parquet(tmp_path / "u.parquet", n=6)  # 6 good + undecodable + missing answer
    write_gen_tar(tmp_path / "g-000.tar", n=6)  # 6 good + missing caption
    return tmp_path


def test_run_pair_end_to_end(data, capsys):
    cfg = _config(data)
    rep = run_pair(cfg, strict=False)
    out = data / "out"
    pairs = read_manifest(str(out / "manifest.parquet"))
    assert len(pairs) == rep["pairs"]["total"]
    # Every input row is accounted for: U has 8 rows (2 unreadable), G has 7 (1 unreadable).
    u, g = rep["und"], rep["gen"]
    assert (u["rows"], u["read_errors"], g["rows"], g["read_errors"]) == (8, 2, 7, 1)
    for side, n_ok in ((u, 6), (g, 6)):
        assert side["accounted"]
        assert side["aligned"] + side["retrieved"] + side["unpaired_no_match"] == n_ok
    # K=2 over 12 items: two aligned medoids, each marked for the half it lacks.
    aligned = [p for p in pairs if p.kind == "aligned"]
    assert len(aligned) == 2 == rep["pairs"]["aligned"]
    for p in aligned:
        assert p.weight == 1.0 and p.und_image == p.gen_image
        if p.needs_augmentation == "generation":
            assert p.prompt is None and p.question and p.answer == "A"
        else:
            assert p.needs_augmentation == "understanding" and p.question is None and p.prompt
    retrieved = [p for p in pairs if p.kind == "retrieved"]
    assert retrieved and len(retrieved) == rep["pairs"]["retrieved"]
    assert len({p.und_image for p in retrieved}) == len(retrieved)  # each und used once
    assert len({p.gen_image for p in retrieved}) == len(retrieved)  # n = 1
    for p in retrieved:
        assert p.similarity >= 0.5 and p.weight == pytest.approx(np.sqrt(p.similarity))
        assert p.choices == ("red", "green") and p.prompt.startswith("a picture number")
    assert rep["issues_total"] == 3 and len((out / "issues.jsonl").read_text().splitlines()) == 3
    assert (out / "similarity_hist.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["pairs"] == rep["pairs"]
    assert not rep["stats"]["und_features_from_cache"]
    assert "PairUG:" in capsys.readouterr().out

    # A second run reads the features from the cache and writes the same manifest.
    rep2 = run_pair(cfg, strict=False)
    assert rep2["stats"]["und_features_from_cache"] and rep2["stats"]["gen_features_from_cache"]
    assert read_manifest(str(out / "manifest.parquet")) == pairs


def test_strict_stops_at_first_bad_row(data):
    with pytest.raises(DataError, match=r"u\.parquet row 6: field 'images': undecodable"):
        run_pair(_config(data), strict=True)


def test_folder_jsonl_source_and_too_many_clusters(data):
    write_gen_jsonl(data / "j")
    cfg = _config(data, num_clusters=50)
    cfg = dataclasses.replace(
        cfg, gen=GenerationSource(format="folder_jsonl", paths=(str(data / "j" / "gen.jsonl"),))
    )
    from models.config import ConfigError

    with pytest.raises(ConfigError, match=r"pairing.num_clusters=50: must be in \[1, 7\]"):
        run_pair(cfg, strict=False)  # 6 und + 1 gen image have features


def test_pair_command_parses_yaml_and_overrides(data):
    (data / "pairing.yaml").write_text(
        yaml.safe_dump(
            {
                "pairing": {
                    "und": {"paths": [str(data / "u.parquet")]},
                    "gen": {"paths": [str(data / "g-000.tar")]},
                    "features": {
                        "allow_random_weights": True,
                        "image_size": 32,
                        "cache_dir": str(data / "cache"),
                    },
                    "num_clusters": 3,
                    "output_dir": str(data / "cli-out"),
                }
            }
        )
    )
    parser = argparse.ArgumentParser()
    add_pair_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "pair",
            "--config",
            str(data / "pairing.yaml"),
            "pairing.threshold=0.4",
            "pairing.neighbors=2",
        ]
    )
    args.func(args)
    rep = json.loads((data / "cli-out" / "report.json").read_text())
    assert rep["settings"]["threshold"] == 0.4 and rep["settings"]["neighbors"] == 2
    assert rep["pairs"]["aligned"] == 3


def test_shipped_yaml_loads():
    cfg = load_pairing_config("deploy/configs/pairing.yaml", [])
    assert (cfg.num_clusters, cfg.neighbors, cfg.threshold) == (5000, 1, 0.6)
    assert cfg.features.extractor == "resnet50"
