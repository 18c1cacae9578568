"""eval.* keys, and results.md / results.json beside the papers' numbers."""

from __future__ import annotations

import json

import pytest

from deploy.config import RunConfig, load_config
from evaluation.report import markdown, paper_numbers, rows, write_results
from models.config import ConfigError


def _cfg(*overrides):
    return load_config(RunConfig, "deploy/configs/smoke.yaml", list(overrides))


def test_eval_every_needs_a_heldout_slice_that_exists(tmp_path):
    from evaluation.during_training import heldout_problems

    (p,) = heldout_problems(_cfg("train.eval_every=5"))
    assert "train.eval_every=5" in p and "eval.und_heldout" in p
    assert heldout_problems(_cfg("train.eval_every=0")) == []
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red dot"}\n')
    ok = _cfg("train.eval_every=5", f"eval.gen_heldout=[{f}]")
    assert ok.train.eval_every == 5 and ok.eval.has_heldout and heldout_problems(ok) == []
    missing = _cfg("train.eval_every=5", f"eval.gen_heldout=[{f}]", "eval.und_heldout=[no.parquet]")
    assert heldout_problems(missing) == ["eval.und_heldout: 'no.parquet': no such file"]


def test_eval_keys_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"eval.gen_scorers.*valid"):
        _cfg("eval.gen_scorers=[fid]")
    with pytest.raises(ConfigError, match=r"eval.data.*does not run"):
        _cfg("eval.benchmarks=[mme]", "eval.data={pope: /x.parquet}")
    with pytest.raises(ConfigError, match=r"eval.batch_size"):
        _cfg("eval.batch_size=0")
    cfg = _cfg("eval.benchmarks=[pope,mme]", "eval.data={pope: /x.parquet}")
    assert cfg.eval.benchmarks == ("pope", "mme") and cfg.eval.data == {"pope": "/x.parquet"}


def test_every_reported_number_has_a_source():
    numbers = paper_numbers()
    # both papers' benchmarks (PairUni Tables 1-3, DSR Tables 1-3)
    for name in ("MMMU", "MMStar", "MME(P)", "POPE", "GenEval", "WISE", "HallusionBench", "SEED"):
        assert numbers[name]["reported"], name
    assert numbers["MME(P)"]["reported"]["Janus-Pro-7B"]["value"] == 1567.1
    assert numbers["T2I-CompBench color"]["reported"]["Janus-Pro-7B + DSR"]["value"] == 0.7824


def test_paper_numbers_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "n.yaml"
    bad.write_text("benchmarks:\n  X:\n    reported:\n      M: {value: 1}\n")
    with pytest.raises(ValueError, match=r"benchmarks.X.reported.M needs value \+ source"):
        paper_numbers(bad)


def test_rows_scale_our_metric_to_the_papers_unit(tmp_path):
    tasks = {
        "pope": {"metrics": {"pope_f1_score": 0.5, "pope_accuracy": 0.625}},
        "mme": {"metrics": {"mme_perception_score": 1200.0, "mme_cognition_score": 300.0}},
        "ocrbench": {"metrics": {"ocrbench_accuracy": 0.25, "ocrbench_accuracy_stderr": 0.1}},
    }
    table = rows(tasks)
    by = {r["benchmark"]: r for r in table}
    assert by["POPE"]["ours"] == 50.0  # 0.5 x scale 100
    assert by["MME(P)"]["ours"] == 1200.0
    assert by["ocrbench"]["metric"] == "ocrbench_accuracy"  # not reported: its own metric
    assert len([r for r in table if r["task"] == "ocrbench"]) == 1  # stderr left out
    md = markdown("DIR", table)
    assert "| POPE | pope / pope_f1_score | 50.0 |" in md
    assert "Janus-Pro-1B: PairUni Table 1" in md
    data = write_results(tmp_path, "DIR", tasks)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(data))
    assert (tmp_path / "results.md").read_text() == md
