"""One learner rank's RL and SFT updates: rows → micro-batches → old log-probs/values → updates.

All ranks call `rl_step`/`sft_step` collectively with their own shard. Gradients are averaged
across ranks by the engine, so per-token weights are `world / global denominator`; micro-batch
counts are equalised across ranks with zero-weight batches so collectives always line up.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from . import distributed
from .advantages import Filtered
from .algo_config import AlgoConfig
from .batching import MicroBatch, micro_batches
from .images import TrajectoryImages, trajectory_images
from .logprobs import token_logprobs
from .losses import clipped_value_loss, k3_kl, ppo_clip, truncated_is_weight
from .objectives import sft_trajectory
from .rows import Row
from .value import step_ranks, token_rewards, token_targets


def norm_weights(mbs: list[MicroBatch], trajs: list[Trajectory], mode: str, filtered: Filtered = Filtered()) -> None:
    """Attach data['w'] = normalisation × row weight, so Σ over micro-batches is the step loss.
    `filtered`: the step's responses (and their tokens) left out of training that still count in
    the denominators (the same figures on every rank)."""
    real = [mb for mb in mbs if "zero" not in mb.data]
    per_seq: dict[int, int] = defaultdict(int)
    for mb in real:
        for i in mb.traj_index.tolist():
            per_seq[i] += 1
    total, n_seqs = distributed.all_reduce_host([sum(per_seq.values()), len(per_seq)], "sum")
    total, n_seqs = total + filtered.tokens, n_seqs + filtered.responses
    (max_len,) = distributed.all_reduce_host([max((len(trajs[i].response_ids) for i in per_seq), default=0)], "max")
    world = distributed.world_size()
    for mb in mbs:
        if "zero" in mb.data:
            mb.data["w"] = torch.zeros_like(mb.row_weight)
            continue
        if mode == "token_mean":
            w = torch.full_like(mb.row_weight, world / max(total, 1))
        elif mode == "seq_mean":
            w = torch.tensor([world / (n_seqs * per_seq[i]) for i in mb.traj_index.tolist()])
        else:  # max_len: the reference's padded-length denominator
            w = torch.full_like(mb.row_weight, world / max(n_seqs * max_len, 1))
        mb.data["w"] = w * mb.row_weight


def _name(t: Trajectory, i: int) -> str:
    return f"trajectory {i} ({t.prompt_uid}/{t.sample_idx})"


def check_trajectories(trajs: list[Trajectory], cfg: ModelConfig) -> None:
    """Refuse what the rows would misread without an error of their own: per-token fields of
    another length than their ids (rows lay every trajectory's fields end to end, so one extra step
    shifts the steps of every later trajectory), steps below 1 (the sampler's are 1-based; a
    negative one masks the prompt in the rows), response or tail ids outside the vocabulary, and the
    mask id as a trained token (banned in the log-probs: log-prob -inf, an inf loss, NaN weights)."""
    for i, t in enumerate(trajs):
        for field, values, of, ids in (("step_map", t.step_map, "response_ids", t.response_ids),
                                       ("logprobs", t.logprobs, "response_ids", t.response_ids),
                                       ("entropies", t.entropies, "response_ids", t.response_ids),
                                       ("tail_steps", t.tail_steps, "tail_ids", t.tail_ids)):
            if len(values) != len(ids):
                raise ValueError(f"{_name(t, i)}: {len(values)} {field} for {len(ids)} {of}")
        for field, steps in (("step_map", t.step_map), ("tail_steps", t.tail_steps)):
            if steps and min(steps) < 1:
                raise ValueError(f"{_name(t, i)}: {field} steps are 1-based, got {min(steps)}")
        if t.block_size < 1:
            raise ValueError(f"{_name(t, i)}: block_size {t.block_size} (must be >= 1)")
        for field, ids in (("response_ids", t.response_ids), ("tail_ids", t.tail_ids)):
            if ids and not (0 <= min(ids) and max(ids) < cfg.vocab_size):
                j, x = next((j, x) for j, x in enumerate(ids) if not 0 <= x < cfg.vocab_size)
                raise ValueError(f"{_name(t, i)}: {field}[{j}] = {x} is outside the vocabulary "
                                 f"({cfg.vocab_size} ids)")
        if cfg.mask_token_id in t.response_ids:
            raise ValueError(f"{_name(t, i)}: response_ids[{t.response_ids.index(cfg.mask_token_id)}] is the mask "
                             f"token id {cfg.mask_token_id}, which the model never predicts")


def check_advantages(trajs: list[Trajectory], advantages: list[float]) -> None:
    """One finite advantage per trajectory: a NaN or inf one would make the loss, and then every
    weight, NaN (the engine steps on whatever gradient it gets)."""
    if len(advantages) != len(trajs):
        raise ValueError(f"rl_step: {len(advantages)} advantages for {len(trajs)} trajectories")
    for i, (t, a) in enumerate(zip(trajs, advantages)):
        if not math.isfinite(a):
            raise ValueError(f"{_name(t, i)}: advantage {a} is not finite")


def _gather(mb: MicroBatch, per_traj: list[float] | list[list[float]]) -> torch.Tensor:
    """Per-token tensor from per-trajectory scalars or per-trajectory token lists."""
    if per_traj and isinstance(per_traj[0], list):
        table = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(v, dtype=torch.float32) for v in per_traj], batch_first=True
        )
        return table[mb.traj_index, mb.token_index]
    return torch.tensor(per_traj, dtype=torch.float32)[mb.traj_index]


class PolicyUpdater:
    def __init__(
        self,
        engine,
        algo: AlgoConfig,
        model_cfg: ModelConfig,
        *,
        ref_model: nn.Module | None = None,
        value_engine=None,
        seed: int = 0,
        pack_rounds: bool = True,
    ) -> None:
        """pack_rounds: a trajectory's TraceRL/AGRPO rounds share one clean copy per row (up to
        algo.token_budget slots); False: one row per round."""
        if algo.uses_value and value_engine is None:
            raise ValueError(f"algo.name={algo.name} needs a value engine (a ValueModel in a TrainEngine)")
        if algo.kl_beta > 0 and algo.kl_ref == "frozen" and ref_model is None:
            raise ValueError("algo.kl_ref=frozen with kl_beta > 0 needs a frozen reference model")
        self.engine, self.algo, self.cfg = engine, algo, model_cfg
        self.ref_model, self.value_engine, self.seed = ref_model, value_engine, seed
        self.pack_budget = algo.token_budget if pack_rounds else None

    # ---- batching -------------------------------------------------------------------------
    def _micro_batches(self, rows: list[Row], images: TrajectoryImages | None = None) -> list[MicroBatch]:
        mbs = micro_batches(rows, self.algo.token_budget, self.cfg.pad_token_id, images)
        (most,) = distributed.all_reduce_host([len(mbs)], "max")
        while len(mbs) < most:  # this rank ran out: a zero-weight batch keeps collectives aligned
            filler = (
                mbs[-1]
                if mbs
                else micro_batches([_filler_row(self.cfg)], self.algo.token_budget, self.cfg.pad_token_id)[0]
            )
            mbs.append(
                MicroBatch(**{k: v for k, v in filler.__dict__.items() if k != "data"}, data={"zero": torch.ones(1)})
            )
        return mbs

    def _device(self) -> torch.device:
        return self.engine.device

    @torch.no_grad()
    def _forward_logprobs(self, model: nn.Module, mbs: list[MicroBatch]) -> list[torch.Tensor]:
        dev = self._device()  # one micro-batch on the device at a time
        with self.engine.autocast():  # the training forward's precision: ratio = 1 before any update
            return [token_logprobs(model, mb.to(dev), self.cfg.mask_token_id, self.algo.temperature)[0].cpu()
                    for mb in mbs]

    # ---- RL -------------------------------------------------------------------------------
    def rl_step(self, trajectories: list[Trajectory], advantages: list[float], step: int,
                filtered: Filtered = Filtered()) -> dict[str, float]:
        """One update on this rank's shard of the step's rollouts: the RL objective with these
        advantages, or, for an objective supervised on rollouts, SFT on them (advantages unused).
        `filtered`: the step's samples the advantage filters dropped (counted in the loss
        normalisation when algo.norm_over = "sampled")."""
        algo, objective = self.algo, self.algo.objective
        if objective.supervised_on == "rollouts":
            return self.sft_on(trajectories, step)
        if objective.supervised_on == "references":
            raise ValueError(f"algo.name={algo.name!r} trains on reference solutions (sft_step), not on rollouts")
        check_trajectories(trajectories, self.cfg)
        check_advantages(trajectories, advantages)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        images = trajectory_images(trajectories, self.cfg)

        def rows() -> list[MicroBatch]:
            return self._micro_batches(objective.rows(trajectories, algo, self.cfg, gen, self.pack_budget), images)

        # Masking baselines draw fresh masks per pass (d1's μ iterations); the others reuse one set.
        epochs = [rows() for _ in range(algo.ppo_epochs)] if objective.redraws_masks else [rows()] * algo.ppo_epochs
        # Old (and frozen-reference) log-probs of every pass are taken before any update.
        for mbs in {id(m): m for m in epochs}.values():
            norm_weights(mbs, trajectories, algo.norm, filtered if algo.norm_over == "sampled" else Filtered())
            olds = self._forward_logprobs(self.engine.module, mbs)
            frozen = self._forward_logprobs(self.ref_model, mbs) if self.ref_model is not None else olds
            for mb, old, ref in zip(mbs, olds, frozen):
                real = "zero" not in mb.data
                mb.data |= {
                    "old_logp": old,
                    "ref_logp": ref if algo.kl_ref == "frozen" else old,  # what the KL term pulls toward
                    "frozen_logp": ref,  # the ref_kl metric's reference
                    "sampler_logp": _gather(mb, [t.logprobs for t in trajectories]) if real else old,
                    "adv": _gather(mb, advantages) if real else torch.zeros_like(old),
                }
        metrics: dict[str, float] = {}
        if algo.uses_value:
            metrics |= self._value_update(epochs[0], trajectories, advantages, step)
        for mbs in epochs:
            metrics |= self._train(self.engine, mbs, self._policy_loss)
        (metrics["rows"],) = distributed.all_reduce_host(
            [sum(mb.input_ids.shape[0] for mb in epochs[0] if "zero" not in mb.data)], "sum"
        )
        return metrics

    def _policy_loss(self, module: nn.Module, mb: MicroBatch, acc: "_Sums") -> torch.Tensor:
        algo, d = self.algo, mb.data
        logp, entropy = token_logprobs(module, mb, self.cfg.mask_token_id, algo.temperature, with_entropy=True)
        per_token, clipped = ppo_clip(logp, d["old_logp"], d["adv"], algo.eps_low, algo.eps_high)
        if algo.tis_cap is not None:
            per_token = per_token * truncated_is_weight(d["old_logp"], d["sampler_logp"], algo.tis_cap)
        kl = k3_kl(logp, d["ref_logp"]) if algo.kl_beta > 0 else torch.zeros_like(logp)
        loss = ((per_token + algo.kl_beta * kl) * d["w"]).sum()
        live = (d["w"] != 0).float()  # zero-weight filler tokens must not show up in the metrics either
        ratio = (logp.detach() - d["old_logp"]).exp()
        if self.ref_model is not None:  # KL(π_θ ‖ π_ref) to the frozen start, k3 estimate per token
            acc.add(ref_kl=(k3_kl(logp.detach(), d["frozen_logp"]) * live).sum())
        acc.add(
            policy_loss=loss.detach(),
            clip_frac=(clipped.float() * live).sum(),
            kl=(kl.detach() * live).sum(),
            entropy=(entropy * live).sum(),
            ratio_mean=(ratio * live).sum(),
            tokens=live.sum(),
        )
        acc.maximum("ratio_max", torch.where(live > 0, ratio, -torch.inf))
        acc.minimum("ratio_min", torch.where(live > 0, ratio, torch.inf))
        return loss

    def _value_update(
        self, mbs: list[MicroBatch], trajs: list[Trajectory], advantages: list[float], step: int
    ) -> dict[str, float]:
        """Old values → token-wise returns/advantages (replacing Â in data['adv']) → value update.
        `advantages`: each response's outcome reward for the recursions (Â, or its raw reward with
        algo.value.outcome = "reward")."""
        dev, vcfg = self._device(), self.algo.value
        with torch.no_grad(), self.value_engine.autocast():
            old_values = [self.value_engine.module(mb.to(dev)).cpu() for mb in mbs]
        values: dict[tuple[int, int], float] = {}
        for mb, v in zip(mbs, old_values):
            if "zero" not in mb.data:
                values.update(zip(zip(mb.traj_index.tolist(), mb.token_index.tolist()), v.tolist()))
        returns: dict[int, list[float]] = {}
        adv: dict[int, list[float]] = {}
        for i in {i for i, _ in values}:
            t = trajs[i]
            ranks = torch.tensor(step_ranks(t, self.algo.shrink, self.cfg.mask_token_id))
            v = torch.tensor([values[(i, j)] for j in range(len(t.response_ids))])
            R, A = token_targets(v, token_rewards(t, ranks, advantages[i]), ranks, vcfg.gamma, vcfg.lam)
            returns[i], adv[i] = R.tolist(), A.tolist()
        for mb, v in zip(mbs, old_values):
            mb.data["old_values"] = v
            if "zero" not in mb.data:
                mb.data["returns"] = _gather(mb, [returns.get(i, []) for i in range(len(trajs))])
                mb.data["adv"] = _gather(mb, [adv.get(i, []) for i in range(len(trajs))])
            else:
                mb.data["returns"] = torch.zeros_like(v)
        metrics = {"value_explained_var": explained_variance([mb for mb in mbs if "zero" not in mb.data])}
        if step % vcfg.train_every:
            return metrics
        return metrics | {f"value_{k}": x for k, x in self._train(self.value_engine, mbs, self._value_loss).items()}

    def _value_loss(self, module: nn.Module, mb: MicroBatch, acc: "_Sums") -> torch.Tensor:
        d = mb.data
        per_token = clipped_value_loss(module(mb), d["old_values"], d["returns"], self.algo.value.clip)
        loss = (per_token * d["w"]).sum()
        acc.add(loss=loss.detach(), tokens=d["w"].ne(0).sum())
        return loss

    # ---- SFT ------------------------------------------------------------------------------
    def sft_step(self, pairs: list[tuple], step: int) -> dict[str, float]:
        """Supervised step on (prompt ids, reference response ids[, the prompt's image]) pairs."""
        trajs = [sft_trajectory(p, r, self.cfg.block_size, self.cfg.eos_token_id) for p, r, *_ in pairs]
        for t, (_, _, *image) in zip(trajs, pairs):
            t.image = image[0] if image else ""
        return self.sft_on(trajs, step)

    def sft_on(self, trajs: list[Trajectory], step: int) -> dict[str, float]:
        """Supervised step on trajectories: recorded rollouts for sft_trace (their decoding order is
        the target), or reference pairs wrapped by `sft_step`."""
        check_trajectories(trajs, self.cfg)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        mbs = self._micro_batches(self.algo.objective.rows(trajs, self.algo, self.cfg, gen, self.pack_budget),
                                  trajectory_images(trajs, self.cfg))
        norm_weights(mbs, trajs, self.algo.norm)
        return self._train(self.engine, mbs, self._sft_loss)

    def _sft_loss(self, module: nn.Module, mb: MicroBatch, acc: "_Sums") -> torch.Tensor:
        logp, _ = token_logprobs(module, mb, self.cfg.mask_token_id, 1.0)
        loss = -(logp * mb.data["w"]).sum()
        acc.add(sft_loss=loss.detach(), tokens=mb.data["w"].ne(0).sum())
        return loss

    # ---- shared ---------------------------------------------------------------------------
    def _train(
        self, engine, mbs: list[MicroBatch], loss: Callable[[nn.Module, MicroBatch, "_Sums"], torch.Tensor]
    ) -> dict[str, float]:
        sums = _Sums()
        dev = self._device()
        # One micro-batch on the device at a time; metrics stay there until the step ends (the
        # engine's own float(loss) is the one host sync per micro-batch).
        out = engine.train_step(mbs, lambda module, mb: (loss(module, mb.to(dev), sums), {}))
        local, maxes, mins = sums.result()
        # Global figures on every rank: sums over ranks (every rank ran the same number of
        # micro-batches, so the same keys), per-token means over the global token count.
        keys = sorted(local)
        acc = dict(zip(keys, distributed.all_reduce_host([local[k] for k in keys], "sum")))
        tokens = max(acc.pop("tokens", 0.0), 1.0)
        # A loss is Σ w·ℓ with w = world / global count on every rank: the step loss is the rank mean.
        metrics = {k: v / distributed.world_size() if k.endswith("loss") else v / tokens for k, v in acc.items()}
        extremes = dict(zip(maxes, distributed.all_reduce_host(list(maxes.values()), "max")))
        extremes.update(zip(mins, (-v for v in distributed.all_reduce_host([-v for v in mins.values()], "max"))))
        metrics.update((k, v) for k, v in extremes.items() if math.isfinite(v))  # ±inf: no live token anywhere
        metrics.update({k: float(v) for k, v in out.items() if k in ("grad_norm", "lr", "skipped")})
        metrics["trained_tokens"] = tokens
        return metrics


def explained_variance(mbs: list[MicroBatch]) -> float:
    """1 - Var(R - V) / Var(R) over every rank's trained tokens, with V the values before this
    step's value update and R their returns: 1 = the value model predicts the returns, 0 = no
    better than their mean, < 0 = worse. 0 when the returns do not vary."""
    sums = [0.0] * 5  # n, ΣR, ΣR², Σ(R-V), Σ(R-V)²
    for mb in mbs:
        R, err = mb.data["returns"].double(), (mb.data["returns"] - mb.data["old_values"]).double()
        for i, x in enumerate((torch.ones_like(R), R, R * R, err, err * err)):
            sums[i] += float(x.sum())
    n, r, r2, e, e2 = distributed.all_reduce_host(sums, "sum")
    if n == 0:
        return 0.0
    var_r, var_e = r2 / n - (r / n) ** 2, e2 / n - (e / n) ** 2
    return 1.0 - var_e / var_r if var_r > 1e-12 else 0.0


class _Sums:
    """Per-step metric sums, maxima and minima kept as device tensors (no host sync per micro-batch)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.maxes: dict[str, torch.Tensor] = {}
        self.mins: dict[str, torch.Tensor] = {}

    def add(self, **values: torch.Tensor) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float()

    def maximum(self, key: str, values: torch.Tensor) -> None:
        top = values.float().amax() if values.numel() else values.new_full((), -torch.inf, dtype=torch.float32)
        self.maxes[key] = torch.maximum(self.maxes[key], top) if key in self.maxes else top

    def minimum(self, key: str, values: torch.Tensor) -> None:
        low = values.float().amin() if values.numel() else values.new_full((), torch.inf, dtype=torch.float32)
        self.mins[key] = torch.minimum(self.mins[key], low) if key in self.mins else low

    def result(self) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """(sums, maxima, minima) on the host, in one transfer."""
        parts = (self.sums, self.maxes, self.mins)
        tensors = [t for part in parts for t in part.values()]
        values = torch.stack(tensors).double().cpu().tolist() if tensors else []
        out, i = [], 0
        for part in parts:
            out.append(dict(zip(part, values[i:i + len(part)])))
            i += len(part)
        return out[0], out[1], out[2]


def _filler_row(cfg: ModelConfig) -> Row:
    one = torch.tensor([cfg.pad_token_id])
    zero = torch.zeros(1, dtype=torch.long)
    return Row(
        0,
        one,
        zero,
        zero,
        zero,
        value_slots=zero,
        logit_slots=zero,
        targets=one,
        token_index=zero,
        weights=torch.zeros(1),
    )
