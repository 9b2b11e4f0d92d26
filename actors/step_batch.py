"""The one typed batch an RL step's phases hand on (docs/design.md §8.2), and the advantages the
driver computes from it. The rows' tokens stay in the object store: a `RowMeta` names its batch."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from learner.advantages import AdvantageResult, ScoredGroup, group_advantages
from learner.algo_config import AlgoConfig
from rewards.result import Score
from rollout.trajectory_batch import RowMeta

from .reward_route import Key, RewardSection


@dataclass
class StepBatch:
    """The rollout group's output: the step's rows in request order with their rewards."""
    rows: list[RowMeta]
    scores: dict[Key, Score]  # what the advantages are computed from
    process_chunks: dict[Key, list[float]] = field(default_factory=dict)  # for a value model (empty: none)
    reward_metrics: dict[str, float] = field(default_factory=dict)  # the process reward's / judge's figures
    rollout_s: float = 0.0  # decoding and scoring, as the driver waited for them
    reissued: int = 0  # calls re-issued after their actor died

    def extended(self, more: StepBatch) -> StepBatch:
        """This batch and a refill round's (dynamic sampling). The judge's and process reward's
        figures stay the first round's; `rollout_s` is the step's timer, which adds up the rounds."""
        return StepBatch(self.rows + more.rows, self.scores | more.scores, self.process_chunks | more.process_chunks,
                         self.reward_metrics, more.rollout_s, self.reissued + more.reissued)

    def advantages(self, algo: AlgoConfig, reward: RewardSection, target: int | None = None) -> AdvantageResult:
        """Group advantages (an objective supervised on rollouts: the correct rows, weight 1), with
        the value model's process scores. With those, the outcome advantage is the outcome's share
        (× outcome_weight). With algo.value.outcome = "reward" the value model's outcome is each
        kept sample's raw reward instead of Â (the groups are still filtered by Â). `target`: train
        on at most this many groups (learner.advantages.group_advantages)."""
        if algo.objective.supervised_on == "rollouts":
            return correct_only(self.rows, self.scores)
        adv = group_advantages(to_groups(self.rows, self.scores), algo.advantage, target)
        if algo.uses_value and algo.value.outcome == "reward":  # the kept groups' raw rewards (not Â)
            adv.advantages = [self.scores[s.key].reward for s in adv.samples]
        if self.process_chunks:
            adv.process_rewards = [self.process_chunks[s.key] for s in adv.samples]
        if reward.process and algo.uses_value and reward.outcome_weight != 1.0:
            adv.advantages = [a * reward.outcome_weight for a in adv.advantages]
        return adv


def to_groups(rows: list[RowMeta], scores: dict[Key, Score]) -> list[ScoredGroup]:
    """One ScoredGroup per prompt uid, samples ordered by index, groups in first-seen order.
    Samples without a verdict (Score.failure) are left out: their 0.0 is no judgement."""
    by_uid: dict[str, list[RowMeta]] = defaultdict(list)
    for m in rows:
        if scores[m.key].failure is None:
            by_uid[m.prompt_uid].append(m)
    groups = []
    for uid, ms in by_uid.items():
        ms.sort(key=lambda m: m.sample_idx)
        s = [scores[m.key] for m in ms]
        groups.append(ScoredGroup(uid, ms, [x.reward for x in s], [x.correct for x in s]))
    return groups


def correct_only(rows: list[RowMeta], scores: dict[Key, Score]) -> AdvantageResult:
    """sft_trace's batch: the correct rollouts, each with weight 1."""
    kept = [m for m in rows if scores[m.key].correct]
    return AdvantageResult(kept, [1.0] * len(kept), {"no_correct_sample": len({m.prompt_uid for m in rows})
                                                      - len({m.prompt_uid for m in kept})})
