"""learner.config.LearnerConfig: paper defaults, registry names, and actionable errors."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools

import pytest

from learner import config as config_module
from learner.advantages import ADV_ESTIMATORS
from learner.config import ALGORITHMS, LearnerConfig
from learner.losses import POLICY_LOSSES
from models.config import ConfigError


def test_defaults_are_pairuni_and_valid():
    cfg = LearnerConfig()
    cfg.validate()
    # PairUni: eps 0.2 both sides, beta_KL 0, lr 1e-6; Pair-GRPO with task-token-mean
    assert (cfg.algorithm, cfg.eps_low, cfg.eps_high, cfg.kl_coef, cfg.lr) == (
        "pair_grpo",
        0.2,
        0.2,
        0.0,
        1e-6,
    )
    assert (cfg.adv_estimator, cfg.policy_loss, cfg.loss_agg) == (
        "pair_grpo",
        "clip",
        "task-token-mean",
    )


def test_choosing_an_algorithm_changes_no_other_key():
    # The papers' settings live in deploy/configs/*.yaml, written out; the algorithm name
    # only picks the advantage estimator and the objective.
    base = LearnerConfig()
    for algorithm in ALGORITHMS:
        chosen = LearnerConfig(algorithm=algorithm)
        chosen.validate()
        assert dataclasses.replace(chosen, algorithm=base.algorithm) == base
    assert LearnerConfig(algorithm="dsr_simpo").adv_estimator is None
    with pytest.raises(ConfigError, match=r"learner\.algorithm='ppo'"):
        LearnerConfig(algorithm="ppo").validate()


def test_algorithms_point_into_the_registries():
    for est, loss in ALGORITHMS.values():
        assert est is None or est in ADV_ESTIMATORS
        assert loss in POLICY_LOSSES


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        (
            "algorithm",
            "ppo",
            "must be one of ('pair_grpo', 'grpo', 'dsr_grpo', 'dsr_simpo', 'simpo')",
        ),
        ("adv_scale", "zscore", "must be one of ('group', 'none')"),
        ("reward_combine", "max", "'sum_then_normalise', 'normalise_then_sum'"),
        ("loss_agg", "sum", "'token-mean', 'seq-mean-token-mean', 'task-token-mean'"),
        ("eps_low", 1.0, "must be in [0, 1)"),
        ("eps_high", -0.1, "must be >= 0"),
        ("kl_coef", -1.0, "must be >= 0"),
        ("adv_eps", -1e-6, "must be >= 0"),
        ("simpo_beta", 0.0, "must be > 0"),
        ("simpo_gamma", -0.5, "must be >= 0"),
        ("lr", 0.0, "must be > 0"),
        ("ppo_epochs", 0, "must be an integer >= 1"),
    ],
)
def test_validate_names_key_value_and_fix(field, value, fragment):
    cfg = dataclasses.replace(LearnerConfig(), **{field: value})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.key == f"learner.{field}" and err.value.value == value
    assert fragment in str(err.value) and "Fix: " in str(err.value)


def test_simpo_rejects_an_unused_kl():
    with pytest.raises(ConfigError, match="unused by dsr_simpo"):
        LearnerConfig(algorithm="dsr_simpo", kl_coef=0.04).validate()


def test_frozen_and_every_field_has_a_docstring():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LearnerConfig().lr = 1.0  # type: ignore[misc]
    tree = ast.parse(inspect.getsource(config_module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LearnerConfig")
    body = cls.body
    documented = {
        stmt.target.id
        for stmt, nxt in itertools.pairwise(body)
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant)
        and isinstance(nxt.value.value, str)
    }
    assert documented == {f.name for f in dataclasses.fields(LearnerConfig)}
