"""The typed run config: YAML + dotted overrides, type checks, validation messages."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from deploy.config import RunConfig, apply_overrides, describe, load_config, write_resolved
from models.config import ConfigError, ModelConfig


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides_compose_and_coerce(tmp_path):
    p = _yaml(tmp_path, "run:\n  name: smoke\nmodel:\n  cfg_weight: 4\n  max_new_tokens: 16\n")
    cfg = load_config(RunConfig, p, ["model.cfg_weight=3", "run.seed=7", "model.dtype=bfloat16"])
    assert cfg.run.name == "smoke" and cfg.run.seed == 7
    assert cfg.model.cfg_weight == 3.0 and isinstance(cfg.model.cfg_weight, float)  # int -> float
    assert cfg.model.max_new_tokens == 16 and cfg.model.dtype == "bfloat16"
    assert cfg.model.image_temperature == ModelConfig().image_temperature  # untouched default
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.cfg_weight = 2.0  # type: ignore[misc]


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.cfg_wieght.*did you mean 'model\.cfg_weight'"):
        load_config(RunConfig, None, ["model.cfg_wieght=3"])
    with pytest.raises(ConfigError, match=r"modle.*did you mean 'model'"):
        load_config(RunConfig, _yaml(tmp_path, "modle:\n  dtype: float32\n"))


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"model\.max_new_tokens='many'.*must be of type int"):
        load_config(RunConfig, None, ["model.max_new_tokens=many"])
    with pytest.raises(ConfigError, match=r"model\.max_new_tokens=True"):
        load_config(RunConfig, None, ["model.max_new_tokens=true"])  # a bool is not an int


def test_validate_message_has_key_value_constraint_fix():
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, None, ["model.cfg_weight=1"])
    assert e.value.key == "model.cfg_weight" and e.value.value == 1.0
    assert "must be > 1" in str(e.value) and "Fix: use 5.0" in str(e.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["model.cfg_weight"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"model": {"dtype": "x"}}, ["model.dtype.sub=1"])
    # scientific notation, which YAML 1.1 reads as a string, still lands as a float
    assert load_config(RunConfig, None, ["model.cfg_weight=5e0"]).model.cfg_weight == 5.0


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(RunConfig, None, ["run.name=rt", "model.cfg_weight=6.5"])
    path = write_resolved(cfg, tmp_path / "run")
    assert yaml.safe_load(path.read_text())["model"]["cfg_weight"] == 6.5
    assert load_config(RunConfig, path) == cfg


def test_every_key_is_documented():
    rows = describe(RunConfig)
    assert {k for k, _, _ in rows} >= {"run.name", "model.cfg_weight", "model.path"}
    undocumented = [k for k, _, doc in rows if not doc]
    assert not undocumented, f"config keys without a docstring: {undocumented}"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(RunConfig, _yaml(tmp_path, "model: [unclosed\n"))


def test_a_closed_pipe_is_not_a_traceback():
    # `pairuni config keys | head -2`: the reader leaves early; the command ends quietly
    # with 128 + SIGPIPE, as a shell reports it, instead of a BrokenPipeError traceback.
    # The read end is closed before the command starts, so its first write fails every time.
    import os
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).parent / "pairuni")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(
            [cli, "config", "keys"], stdout=write_end, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write_end)
    err = r.stderr.decode()
    assert r.returncode == 141 and "Traceback" not in err, err


def test_reward_endpoint_keys_nested_and_flat_of_earlier_releases(tmp_path):
    keys = [k for k, _, _ in describe(RunConfig)]
    assert "rewards.hps.max_batch_size" in keys and "rewards.toy_judge.num_cpus" in keys
    assert not any(k.startswith("rewards.hps_") for k in keys)
    smoke = "deploy/configs/smoke.yaml"  # nested sections: rewards: {hps: {arch: tiny, ...}}
    cfg = load_config(RunConfig, smoke, ["rewards.hps.max_batch_size=32"])
    assert (cfg.rewards.hps.arch, cfg.rewards.hps.max_batch_size) == ("tiny", 32)
    # a flat key of an earlier release, in an override or a file: read as its nested key
    with pytest.warns(FutureWarning, match=r"rewards\.hps_arch is now rewards\.hps\.arch"):
        old = load_config(RunConfig, smoke, ["rewards.hps_arch=ViT-H-14"])
    assert old.rewards.hps.arch == "ViT-H-14" and old.rewards.hps.num_cpus == 0.25
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"rewards": {"hps_num_cpus": 0.5, "accuracy_num_cpus": 2}}))
    with pytest.warns(FutureWarning):
        old = load_config(RunConfig, path, ["rewards.hps.num_cpus=0.75"])  # the override wins
    assert (old.rewards.hps.num_cpus, old.rewards.accuracy.num_cpus) == (0.75, 2.0)
    with (
        pytest.raises(ConfigError, match=r"rewards\.hps\.min_replicas=3"),
        pytest.warns(FutureWarning),
    ):
        load_config(RunConfig, None, ["rewards.hps_min_replicas=3"])


def test_a_reward_term_needs_its_endpoint_listed():
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, None, ["train.gen_rewards={toy_judge: 1.0}"])
    msg = str(info.value)
    assert info.value.key == "train.gen_rewards" and "rewards.endpoints" in msg, msg
    with pytest.raises(ConfigError, match=r"'accuracy' is not a reward term for gen rollouts"):
        load_config(RunConfig, None, ["train.gen_rewards={accuracy: 1.0}"])
    over = ["rewards.endpoints=[accuracy, toy_judge]", "train.gen_rewards={toy_judge: 1.0}"]
    assert load_config(RunConfig, None, over).train.gen_rewards == {"toy_judge": 1.0}
