"""deploy/serve_rewards.yaml and `pairuni serve rewards`: builders, options, config loading
(no cluster needed: applications are built, not run)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import yaml

from deploy.serving import add_serve_rewards_command, serve_rewards
from models.config import ConfigError, from_dict
from rewards.cli import load_rewards_config
from rewards.config import RewardsConfig
from rewards.serve import build_app, config_from_args, deployment_options

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**sections) -> RewardsConfig:
    return from_dict(RewardsConfig, sections, prefix="rewards.")


def test_serve_yaml_applications_build_with_their_config():
    spec = yaml.safe_load((ROOT / "deploy" / "serve_rewards.yaml").read_text())
    assert spec["http_options"]["host"] == "127.0.0.1"
    names = []
    for app in spec["applications"]:
        module, attr = app["import_path"].split(":")
        builder = getattr(importlib.import_module(module), attr)
        application = builder(app["args"])  # validates the args as RewardsConfig fields
        assert application._bound_deployment.name == app["name"]
        assert app["route_prefix"] == f"/{app['name']}"
        names.append(app["name"])
    assert names == ["accuracy", "hps", "dual"]
    hps = config_from_args(spec["applications"][1]["args"])
    assert (hps.hps.num_gpus, hps.hps.device, hps.hps.precision) == (0.25, "cuda", "bf16")
    # every declared endpoint has its builder, named after it
    app = importlib.import_module("rewards.serve").toy_judge_app({})
    assert app._bound_deployment.name == "toy_judge"


def test_deployment_options_follow_config():
    fixed = deployment_options(_cfg(hps={"num_replicas": 3}), "hps")
    assert (
        fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed and fixed["name"] == "hps"
    )
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    auto = deployment_options(
        _cfg(
            dual={"min_replicas": 1, "max_replicas": 4, "num_gpus": 0.5, "device": "cuda"},
            target_ongoing_requests=3.0,
        ),
        "dual",
    )
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3.0,
    }
    assert "num_replicas" not in auto and auto["ray_actor_options"]["num_gpus"] == 0.5
    assert deployment_options(RewardsConfig(), "accuracy")["ray_actor_options"]["num_gpus"] == 0.0
    with pytest.raises(
        ValueError, match=r"valid: \['accuracy', 'clip_score', 'dual', 'hps', 'toy_judge'\]"
    ):
        build_app("clip", {})
    with pytest.raises(ConfigError, match=r"rewards\.hps\.arch"):
        build_app("hps", {"hps": {"arch": "ViT-Q"}})
    with pytest.raises(ConfigError, match=r"rewards\.hps\.arch"), pytest.warns(FutureWarning):
        build_app("hps", {"hps_arch": "ViT-Q"})  # a flat key of an earlier release


def test_serve_rewards_command_parses_config_and_overrides(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(
        yaml.safe_dump(
            {"model": {"dtype": "float32"}, "rewards": {"endpoints": ["accuracy"], "port": 8123}}
        )
    )
    parser = argparse.ArgumentParser(prog="pairuni")
    serve = parser.add_subparsers(dest="cmd").add_parser("serve").add_subparsers(dest="sub")
    add_serve_rewards_command(serve)
    args = parser.parse_args(
        [
            "serve",
            "rewards",
            "--config",
            str(run),
            "rewards.hps.max_batch_size=32",
            "accuracy.max_replicas=2",
        ]
    )
    assert args.func is serve_rewards
    cfg = load_rewards_config(args.config, args.overrides)
    assert cfg.endpoints == ("accuracy",) and cfg.port == 8123
    assert cfg.hps.max_batch_size == 32 and cfg.accuracy.max_replicas == 2
    with pytest.warns(FutureWarning):  # the flat keys of earlier releases still work
        old = load_rewards_config(str(run), ["rewards.hps_max_batch_size=32"])
    assert old.hps.max_batch_size == 32
    # A rewards-only file works too; an unknown key is an error naming it.
    only = tmp_path / "rewards.yaml"
    only.write_text("hps: {arch: tiny}\nport: 8124\n")
    assert load_rewards_config(str(only)).hps.arch == "tiny"
    with pytest.raises(ConfigError, match=r"rewards\.hps\.batch"):
        load_rewards_config(None, ["rewards.hps.batch=3"])
    with pytest.raises(ConfigError, match="rewards.client_mode"):
        load_rewards_config(None, ["rewards.client_mode=grpc"])
