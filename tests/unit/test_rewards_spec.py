"""A new reward endpoint is one declaration: the worked example of docs/extending.md.

``brevity`` rewards short understanding answers (1 - words / max_words, floored at 0). It is
declared here as a module of ``rewards/`` would declare it, and goes through everything that follows from the spec: its
config section (nested and flat keys), the run config's reward-term check, the driver's
request items and ``deploy.train.score``, and the generic deployment's replica
(``rewards.endpoint.RewardEndpoint``, in-process: validation and a batch through the scorer;
``@serve.batch`` itself needs a Serve replica, which tests/integration/test_rewards_serve.py
runs for the built-in endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from actors.types import Rollout, RolloutRequest
from models.config import ConfigError, check, from_dict
from models.tasks import Task
from rewards import spec
from rewards.config import config_class
from rewards.spec import EndpointSettings, EndpointSpec, Scorer
from rewards.types import Limits, RewardInputError, text_field


# ---- what `rewards/brevity.py` would hold ----------------------------------------------------
@dataclass(frozen=True)
class BrevityItem:
    response: str


def parse_item(item: dict, field: str, lim: Limits) -> BrevityItem:
    return BrevityItem(text_field(item, "response", field, lim, empty_ok=True))


def item_of(rollout) -> dict | None:
    return {"response": rollout.text or ""}


@dataclass(frozen=True)
class BrevitySettings(EndpointSettings):
    """The brevity endpoint (``rewards.brevity.*``)."""

    num_cpus: float = 0.25
    max_words: int = 8
    """Answers of this many words or more score 0."""

    def check_settings(self, key: str) -> None:
        super().check_settings(key)
        check(self.max_words >= 1, f"{key}.max_words", self.max_words, "must be >= 1", "use 8")


class BrevityScorer(Scorer):
    def __init__(self, s: BrevitySettings):
        self.max_words = s.max_words

    def score(self, items: list[BrevityItem]) -> list[float]:
        return [max(0.0, 1.0 - len(it.response.split()) / self.max_words) for it in items]


SPEC = EndpointSpec(
    name="brevity",
    tasks=(Task.UND,),
    settings=BrevitySettings,
    parse_item=parse_item,
    item_of=item_of,
    make_scorer=BrevityScorer,
    title="short answers",
)
# `rewards/brevity.py` ends with `SPEC = declare(EndpointSpec(...))` and is listed in
# `rewards.spec.BUILTIN`; here the fixture registers it for one test at a time.


@pytest.fixture
def brevity(monkeypatch):
    monkeypatch.setitem(spec._REGISTRY, "brevity", SPEC)
    return config_class(spec.endpoints().values())


def _rollout(text: str) -> Rollout:
    req = RolloutRequest(1, 0, Task.UND, "what colour?", n=1, seed=0, answer="red")
    return Rollout(req, 0, np.zeros(3, np.int64), np.zeros(3, np.float32), 0, text=text)


def test_config_section_nested_and_flat(brevity):
    cfg = from_dict(brevity, {"endpoints": ["brevity"], "brevity": {"max_words": 4}}, "rewards.")
    cfg.validate()
    assert cfg.settings("brevity") == BrevitySettings(max_words=4)
    with pytest.warns(FutureWarning, match=r"rewards\.brevity_max_words is now"):
        assert from_dict(brevity, {"brevity_max_words": 4}, "rewards.") == from_dict(
            brevity, {"brevity": {"max_words": 4}}
        )
    with pytest.raises(ConfigError, match=r"rewards\.brevity\.max_words=0"):
        from_dict(brevity, {"brevity": {"max_words": 0}}, "rewards.").validate()


def test_reward_terms_follow_the_declared_tasks(brevity):
    from deploy.config import reward_terms

    assert "brevity" in reward_terms("und") and "brevity" not in reward_terms("gen")


def test_driver_items_and_the_generic_deployment_score_it(brevity):
    from deploy.train import score
    from rewards.endpoint import RewardEndpoint
    from rewards.types import parse_request

    cfg = from_dict(brevity, {"endpoints": ["brevity"], "brevity": {"max_words": 4}}, "rewards.")
    endpoint = RewardEndpoint(cfg, "brevity")  # what every replica of the deployment runs

    class InProcess:  # the client's one method the driver calls: the replica's path, minus
        # @serve.batch's queue (it needs a replica context): parse, then score one batch
        def score_with_details(self, items):
            scored = endpoint._score(parse_request("brevity", {"items": items}, endpoint.lim))
            return [r for r, _ in scored], [d for _, d in scored]

    rollouts = [_rollout("red"), _rollout("it is a red one"), _rollout("")]
    score(rollouts, {"brevity": 1.0}, {"brevity": InProcess()})
    assert [r.rewards["brevity"] for r in rollouts] == [0.75, 0.0, 1.0]
    with pytest.raises(RewardInputError, match=r"items\[0\]\.response: missing"):
        parse_request("brevity", {"items": [{"answer": "x"}]}, endpoint.lim)
    with pytest.raises(ValueError, match="does not follow the policy"):
        endpoint.get_version()
