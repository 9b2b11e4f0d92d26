"""The one validated tree for a composed Hydra config (docs/design.md §9). Pure pydantic; the rules
of each run mode are actors/modes.py's, and actors/configure.py applies both before Ray starts.
The same objects travel to the actors."""
from __future__ import annotations

from typing import Any, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learner.algo_config import AlgoConfig
from learner.engine_config import EngineConfig
from learner.objectives import REFERENCE_SFT
from models.config import Family, family_attention
from rewards.judge_backends import JudgeConfig
from rollout.params import SamplingParams
from tasks.registry import TASKS, check_knobs, resolve_reward

from .reward_route import RewardSection
from .weight_sync.planner import AUTO, check_transport

# `${sum:a,b}` in conf/ (e.g. engine.total_steps = warm-up + RL steps).
if not OmegaConf.has_resolver("sum"):
    OmegaConf.register_new_resolver("sum", lambda *xs: sum(xs))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


TINY_FAMILIES = ("tiny", "llada_v")  # families whose random tiny checkpoint `model.path: null` writes


class ModelSection(_Strict):
    name: str
    family: Family
    # Local checkpoint directory; null only for the tiny families `tiny` and `llada_v` (a seeded random
    # tiny checkpoint is written to run_dir).
    path: str | None = None
    block_size: int = Field(4, ge=1)
    mask_token_id: int | None = Field(None, ge=0)
    eos_token_id: int | None = Field(None, ge=0)
    pad_token_id: int | None = Field(None, ge=0)
    stop_token_ids: list[int] = []
    max_position_embeddings: int | None = Field(None, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    init_seed: int = 0  # tiny only: seed of the random checkpoint
    train_vision: bool = False  # vision-language models: train the vision tower too (else it is frozen, never synced)
    ref_path: str | None = None  # frozen reference (algo.kl_ref=frozen, the ref_kl metric); default: RL's start

    @model_validator(mode="after")
    def _check(self) -> ModelSection:
        if self.path is None and self.family not in TINY_FAMILIES:
            raise ValueError(f"model.path is required for model {self.name!r} (family {self.family}): "
                             "set model.path=/dir/of/the/checkpoint")
        return self

    def overrides(self) -> dict[str, Any]:
        """Token ids / block size handed to models.load_model (None = take from the checkpoint)."""
        keys = ("mask_token_id", "eos_token_id", "pad_token_id", "block_size")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.stop_token_ids:
            out["stop_token_ids"] = list(self.stop_token_ids)
        return out


class TaskSection(_Strict):
    name: str
    params: dict[str, Any] = {}  # knobs passed to tasks.registry.get_task(name, **params)
    reward: str | None = None  # override the task's reward: math | code | pkg.mod:fn
    template: Literal["chat", "plain", "auto"] | None = None  # override the task's prompt template
    train_size: int | None = Field(None, ge=1)  # rows drawn for training (generated tasks need one)
    # Seed of the train/eval partition and of generated rows: a property of the data, not of the
    # run, so runs with different trainer.seed are scored on the same held-out questions.
    split_seed: int = 0

    # Checked now: get_task and resolve_reward run only after Ray has started.
    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in TASKS:
            raise ValueError(f"task.name={name!r}: allowed values are {sorted(TASKS)}")
        return name

    @field_validator("reward")
    @classmethod
    def _loadable(cls, reward: str | None) -> str | None:
        if reward is not None:
            resolve_reward(reward)  # its error names task.reward and the built-in names
        return reward

    @model_validator(mode="after")
    def _knobs(self) -> TaskSection:
        check_knobs(self.name, self.params)  # its error names task.params.<key> and the allowed keys
        return self


class PoolSection(_Strict):
    num_workers: int = Field(1, ge=1)  # rollout/reward/judge: the target; fewer while nodes are missing
    # rollout/reward/judge: the fewest the run works on while nodes are missing (below it, it waits
    # for capacity); null: 1. The learner group is fixed-size.
    min_workers: int | None = Field(None, ge=1)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    resources: dict[str, float] = {}  # custom resources per worker (e.g. {"rollout_node": 1})
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_restarts: int = Field(3, ge=0)  # rollout/reward only: how often Ray restarts a dead worker

    @model_validator(mode="after")
    def _check(self) -> PoolSection:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"min_workers ({self.min_workers}) must be at most num_workers ({self.num_workers}), "
                             "the pool's target")
        return self


class ClusterSection(_Strict):
    rollout: PoolSection = PoolSection()
    learner: PoolSection = PoolSection()
    reward: PoolSection = PoolSection()
    judge: PoolSection = PoolSection()  # created only when reward.outcome or reward.process is "judge"
    colocate: bool = False  # rollout workers share the learner placement group's bundles

    @model_validator(mode="after")
    def _check(self) -> ClusterSection:
        if self.learner.min_workers is not None:
            raise ValueError(f"cluster.learner.min_workers={self.learner.min_workers}: the learner group is "
                             "fixed-size (cluster.learner.num_workers ranks); rollout, reward and judge are elastic")
        return self


class TrainerSection(_Strict):
    steps: int = Field(2, ge=0)
    prompts_per_step: int = Field(8, ge=1)
    responses_per_prompt: int = Field(4, ge=1)
    eval_every: int = Field(0, ge=0)  # 0 = never
    eval_prompts: int = Field(32, ge=1)
    eval_samples: int = Field(1, ge=1)  # k of avg@k
    eval_greedy: bool = True
    checkpoint_every: int = Field(0, ge=0)  # 0 = only at the end
    keep_last: int = Field(2, ge=1)
    # The best held-out evaluation's policy as checkpoints/best/hf (never pruned by keep_last);
    # summary.json reports acc_best and its step next to acc_after.
    keep_best: bool = True
    seed: int = 0
    run_dir: str = "runs/default"
    resume: str = "auto"  # auto | never | /path/to/checkpoints/step_N
    logger: list[Literal["tensorboard", "wandb", "mlflow"]] = ["tensorboard"]
    progress: bool = True
    reward_chunk: int = Field(16, ge=1)  # trajectories per reward task
    plot: bool = True
    # Stop training after this many seconds (then evaluate, checkpoint and report as at the last
    # step); e.g. an SFT control given the same wall time as an RL run.
    max_wall_s: float | None = Field(None, gt=0)
    # A learner rank (or the value/frozen model it holds) that dies: the group is recreated from
    # the latest checkpoint this often per run; once more stops the run (resumable from that checkpoint).
    max_learner_restarts: int = Field(2, ge=0)


class WarmupSection(_Strict):
    """Supervised steps on the task's reference solutions before RL (the tiny model's warm start)."""
    steps: int = Field(0, ge=0)
    prompts_per_step: int = Field(64, ge=1)
    # Distinct training rows the warm-up learns from (the first of the task's train rows; null:
    # task.train_size). A small set keeps the warm start limited: more SFT on it stops paying off,
    # while RL keeps learning from the reward on every training prompt.
    train_size: int | None = Field(None, ge=1)
    algo: AlgoConfig = AlgoConfig(name="sft_semi_ar")
    # The warm-up has its own optimizer and learning rate; RL then starts from the exported warm
    # start with a fresh one (SFT-sized Adam moments would otherwise damp the RL updates for
    # ~1/(1-β2) steps). Warm starts are cached under cache_dir by a hash of what produced them.
    lr: float = Field(1e-3, gt=0.0)
    cache_dir: str = "runs/warm_starts"

    @model_validator(mode="after")
    def _check(self) -> WarmupSection:
        if self.algo.objective.supervised_on != "references":
            raise ValueError(f"warmup.algo.name={self.algo.name!r}: allowed values are {REFERENCE_SFT} "
                             "(warm-up trains on reference solutions)")
        return self


class WeightSyncSection(_Strict):
    # auto: per rollout worker, the first that fits of cuda_ipc (on learner rank 0's GPU), nccl (both
    # on GPUs), shared_memory (on rank 0's node, when /dev/shm holds a version), collective (gloo);
    # a named transport is used for every worker (an error names a worker it cannot serve).
    transport: str = AUTO
    bucket_mb: int = Field(64, ge=1)

    @field_validator("transport")
    @classmethod
    def _known(cls, name: str) -> str:
        return check_transport(name)


class AsyncSection(_Strict):
    max_staleness: Literal[0, 1] = 0


class LearnerSection(_Strict):
    # A trajectory's TraceRL/AGRPO rounds share one clean copy per row, (K+1)·L slots instead of
    # 2K·L; algo.token_budget may still split its rounds over rows. false: one row per round.
    pack_rounds: bool = True


class RaySection(_Strict):
    address: str | None = None
    namespace: str | None = None  # default: derived from run_dir so two runs never share names
    num_cpus: int | None = Field(None, ge=1)
    include_dashboard: bool = True


class RunConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # rl: RL (after the optional SFT warm start); sft: supervised training on the task's reference
    # solutions; eval: decode and score the held-out split with model.path, no learners.
    mode: Literal["rl", "sft", "eval"] = "rl"
    model: ModelSection
    algo: AlgoConfig = AlgoConfig()
    task: TaskSection
    reward: RewardSection = RewardSection()
    rollout: SamplingParams = SamplingParams()
    eval_rollout: dict[str, Any] = {}  # SamplingParams fields that differ for evaluation
    cluster: ClusterSection = ClusterSection()
    trainer: TrainerSection = TrainerSection()
    warmup: WarmupSection = WarmupSection()
    engine: EngineConfig = EngineConfig()
    learner: LearnerSection = LearnerSection()
    judge: JudgeConfig = JudgeConfig()
    weight_sync: WeightSyncSection = WeightSyncSection()
    async_: AsyncSection = Field(AsyncSection(), alias="async")
    ray: RaySection = RaySection()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        m, r = self.model, self.rollout
        block_causal = family_attention(m.family) == "block_causal"
        if block_causal and r.block_size != m.block_size:
            raise ValueError(f"rollout.block_size={r.block_size} does not fit model {m.name!r}: "
                             f"{m.family} models decode in the blocks they were trained with "
                             f"(model.block_size={m.block_size})")
        if not block_causal and r.max_new_tokens % r.block_size:
            raise ValueError(f"rollout.block_size={r.block_size} must divide rollout.max_new_tokens="
                             f"{r.max_new_tokens} for full-attention model {m.name!r}")
        if m.max_position_embeddings and r.max_new_tokens + r.block_size > m.max_position_embeddings:
            raise ValueError(f"rollout.max_new_tokens={r.max_new_tokens} does not fit model {m.name!r} "
                             f"(max_position_embeddings={m.max_position_embeddings})")
        if self.cluster.colocate and self.cluster.rollout.num_workers != self.cluster.learner.num_workers:
            raise ValueError(f"cluster.colocate=true needs cluster.rollout.num_workers "
                             f"({self.cluster.rollout.num_workers}) == cluster.learner.num_workers "
                             f"({self.cluster.learner.num_workers}): each rollout worker shares a learner's bundle")
        e = self.engine
        if self.cluster.colocate and e.backend == "deepspeed" and (e.zero_stage < 2 or e.offload_params):
            raise ValueError(f"cluster.colocate=true with engine.backend=deepspeed needs engine.zero_stage 2 or 3 "
                             f"without engine.offload_params (got zero_stage={e.zero_stage}, offload_params="
                             f"{e.offload_params}): the learner parks its ZeRO-2/3 state in host memory while the "
                             "rollout worker decodes (DeepSpeed's offload_states)")
        # 0 comes from engine.total_steps=${trainer.steps} in runs without steps (mode=eval); with steps,
        # the cosine would end before the first one and hold lr at min_lr_ratio * lr throughout.
        if e.schedule == "cosine" and e.total_steps == 0 and self.trainer.steps:
            raise ValueError(f"engine.total_steps=0 with engine.schedule=cosine and trainer.steps="
                             f"{self.trainer.steps}: the decay would end before the first step (lr = min_lr_ratio "
                             "* lr throughout); set engine.total_steps to the step it ends at (conf: trainer.steps) "
                             "or engine.schedule=constant")
        if self.cluster.colocate and self.async_.max_staleness:
            raise ValueError("async.max_staleness=1 overlaps rollout with the update, but cluster.colocate=true "
                             "rollout workers release their weights while the learner updates: pick one")
        refill = self.algo.advantage.refill_rounds
        if refill and (self.async_.max_staleness or self.algo.objective.supervised_on):
            raise ValueError(f"algo.advantage.refill_rounds={refill} (dynamic sampling; TraceRL's default) needs "
                             f"async.max_staleness=0 and an objective with advantages (got async.max_staleness="
                             f"{self.async_.max_staleness}, algo.name={self.algo.name!r}): add "
                             "algo.advantage.refill_rounds=0")
        if self.trainer.eval_samples > 1 and self.trainer.eval_greedy and not self.eval_rollout.get("temperature"):
            raise ValueError(f"trainer.eval_samples={self.trainer.eval_samples} with trainer.eval_greedy=true "
                             "decodes k identical samples: set trainer.eval_greedy=false for avg@k / pass@k")
        if self.reward.judged and not self.judge.model:
            raise ValueError(f"judge.model is required with reward.outcome={self.reward.outcome!r} / "
                             f"reward.process={self.reward.process!r}: set judge.model=/dir/of/the/judge")
        try:
            self.eval_params()  # bad eval_rollout keys fail now, not at the first evaluation
        except ValidationError as err:  # its locations are SamplingParams' own: name them under eval_rollout
            raise ValueError("; ".join(f"{'.'.join(['eval_rollout', *map(str, e['loc'])])}: {e['msg']}"
                                       for e in err.errors())) from None
        return self

    def eval_params(self) -> SamplingParams:
        values = self.rollout.model_dump()
        if self.trainer.eval_greedy:
            values["temperature"] = 0.0
        return SamplingParams(**{**values, **self.eval_rollout})


class ConfigError(ValueError):
    """A composed config that does not validate; the message names every bad key."""


def validate_tree(raw: dict[str, Any]) -> RunConfig:
    """The pydantic tree's own checks (actors/configure.validate_config adds the mode's)."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
            lines.append(f"  {key}: {e['msg']}{got}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None
