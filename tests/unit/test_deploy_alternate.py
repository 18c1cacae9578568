"""DSR's alternating strategy (section 4.5): the turns, and each turn's run config."""

from __future__ import annotations

import pytest

from deploy.alternate import epoch_steps, turn_config, turn_order
from deploy.config import RunConfig
from models.config import ConfigError, load_config

DSR = [
    "learner.algorithm=dsr_grpo",
    "rewards.endpoints=[dual]",
    "train.und_rewards={dual: 1.0}",
    "train.gen_rewards={dual: 1.0}",
    "train.strategy=alternate",
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from pairing.toyworld import write_dsr_manifest

    return write_dsr_manifest(tmp_path_factory.mktemp("dsr"), seed=0, n=4)  # 4 prompts, 8 images


def test_turns_alternate_from_the_first():
    cfg = load_config(RunConfig, None, [*DSR, "train.alternate_epochs=5"])
    assert turn_order(cfg) == ["gen", "und", "gen", "und", "gen"]
    cfg = load_config(RunConfig, None, [*DSR, "train.alternate_first=und"])
    assert turn_order(cfg) == ["und", "gen"]


def test_a_turn_is_one_epoch_of_its_task_rewarded_by_the_frozen_other(manifest, tmp_path):
    cfg = load_config(
        RunConfig,
        None,
        [*DSR, f"train.manifest={manifest}", f"run.root={tmp_path}", "run.name=alt",
         "train.pairs_per_step=3", "train.alternate_epochs=4"],
    )  # fmt: skip
    assert epoch_steps(cfg, "gen") == 2 and epoch_steps(cfg, "und") == 3  # ceil(4/3), ceil(8/3)
    t = turn_config(cfg, "und", 1, "/runs/alt/models/gen")
    assert t.run.dir == tmp_path / "alt" / "und"
    assert t.train.tasks == ("und",) and t.train.strategy == "joint"
    assert t.train.steps == 6  # its second epoch ends at step 2 x 3
    assert t.rewards.dual.model_path == "/runs/alt/models/gen"
    assert t.rewards.dual.follow_policy is False
    assert cfg.rewards.follows_policy("dual") and not t.rewards.follows_policy("dual")
    assert not cfg.rewards.follows_policy("hps")  # scores with its own model
    assert t.learner.lr_decay_steps == 2 * 3  # two und turns of 3 steps: one schedule
    t.learner.validate()


def test_alternate_needs_dual_rewards_alone_and_both_tasks():
    with pytest.raises(ConfigError, match=r"train\.strategy"):
        load_config(RunConfig, None, [*DSR[:-1], "train.gen_rewards={dual: 1.0, hps: 1.0}",
                                      "rewards.endpoints=[dual, hps]", "train.strategy=alternate"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.tasks"):
        load_config(RunConfig, None, [*DSR, "train.tasks=[gen]"])
    with pytest.raises(ConfigError, match=r"train\.strategy"):
        load_config(RunConfig, None, ["train.strategy=adversarial"])


def test_the_dsr_endpoint_defaults_to_the_policys_checkpoint():
    from deploy.train import policy_rewards

    cfg = load_config(RunConfig, None, [*DSR[:-1], "model.path=/data/Janus-Pro-7B-hf"])
    assert policy_rewards(cfg).dual.model_path == "/data/Janus-Pro-7B-hf"
    other = load_config(RunConfig, None, [*DSR[:-1], "model.path=/a", "rewards.dual.model_path=/b"])
    assert policy_rewards(other).dual.model_path == "/b"  # an explicit path is kept
    assert policy_rewards(load_config(RunConfig, None, DSR[:-1])).dual.model_path == ""
