"""What a run asks of the cluster: per role, from config, and the message when it cannot fit."""

from __future__ import annotations

from deploy.config import RunConfig, load_config
from deploy.resources import demands, shortfall


def test_smoke_config_asks_two_cpus_by_role():
    need = {d.role: d.cpus for d in demands(load_config(RunConfig, "deploy/configs/smoke.yaml"))}
    # 2 x 0.25 text, 1 x 0.5 image, 1 x 0.5 learner, accuracy 0.25 + hps 0.25 (one replica
    # each): 2 in all, what `ray start --head` registers on a 2-core machine
    assert need == {
        "text rollout workers": 0.5,
        "image rollout workers": 0.5,
        "learners": 0.5,
        "reward endpoint accuracy": 0.25,
        "reward endpoint hps": 0.25,
    }


def test_a_shortfall_lists_each_role_and_its_keys():
    over = ["learner.learner_num_gpus=1", "rollout.text_num_cpus=0.5"]
    cfg = load_config(RunConfig, "deploy/configs/smoke.yaml", over)
    msg = shortfall(demands(cfg), cpus=2.0, gpus=0.0)
    assert "asks for 2.5 CPUs and 1 GPUs; the Ray cluster has 2 CPUs and 0 GPUs" in msg
    assert "learner.num_learners x learner.learner_num_cpus" in msg
    assert "rewards.hps.num_replicas" in msg
    assert shortfall(demands(load_config(RunConfig, "deploy/configs/smoke.yaml")), 2.0, 0.0) is None


def test_a_token_file_readable_by_others_is_warned_about(tmp_path, caplog):
    from deploy.resources import warn_if_token_readable

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    assert warn_if_token_readable(str(token)) and "chmod 600" in caplog.text
    token.chmod(0o600)
    assert not warn_if_token_readable(str(token))
