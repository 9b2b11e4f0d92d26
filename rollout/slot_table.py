"""The rows in flight: per-slot canvases and KV cache on the device, one host record per row.

Ownership: the host record (`RowRecord`) owns everything known without reading the device (the
prompt, seed, the current block's column, the canvas end); the device owns what the passes compute
(the canvas: tokens, commit steps, log-probs, entropies; the KV cache; each row's pass counter).
Nothing is kept on both sides: the per-row inputs of a block are uploaded from the records once per
block (rollout/scheduler.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from models.kv_cache import KVCache
from models.transformer import DiffusionLM

from .host_link import HostLink
from .params import SamplingParams
from .trajectory import FinishReason, Trajectory


def canvas_of(prompt_len: int, params: SamplingParams, block_causal: bool) -> tuple[int, int]:
    """(first generated block's column, canvas end) of a prompt. Block-causal blocks are aligned to
    positions (as SDAR was trained), so the prompt's tail shares the first generated block."""
    B = params.block_size
    if block_causal:
        c0 = prompt_len // B * B
        return c0, c0 + -(-(prompt_len - c0 + params.max_new_tokens) // B) * B
    return prompt_len, prompt_len + params.max_new_tokens


@dataclass(frozen=True)
class PromptItem:
    """One entry of a decode's queue."""

    index: int  # what the trajectory is yielded with
    prompt: list[int]
    seed: int
    # Vision-language models: the prompt's image features [image_tokens, H] on the model's device,
    # which its placeholder ids take (models/vision.py); None for a text prompt.
    image: torch.Tensor | None = None


@dataclass
class RowRecord:
    item: PromptItem
    c0: int          # column of the row's current block (advanced by `close`)
    canvas_end: int  # end of this row's canvas

    @property
    def start(self) -> int:
        """Column of the first response token."""
        return len(self.item.prompt)


@dataclass(frozen=True)
class RowEnd:
    """How a finished row ends (from the block-end status, rollout/stopping.py)."""

    end: int  # response end column (exclusive): after the stop token, or the budget
    reason: FinishReason


@dataclass(frozen=True)
class Admitted:
    slots: torch.Tensor  # [n] on the device
    rows: list[RowRecord]


@dataclass(frozen=True)
class FinishedRows:
    """Rows closed at one block end, with their canvases in flight to the host (HostLink.copy_out)."""

    rows: list[RowRecord]
    ends: list[RowEnd]
    ids_steps: torch.Tensor    # [2, n, width] tokens and commit steps
    logp_ent: torch.Tensor     # [2, n, width] log-probs and entropies
    forwards: torch.Tensor     # [n] passes per row


class SlotTable:
    def __init__(self, model: DiffusionLM, params: SamplingParams, slots: int, width: int, link: HostLink) -> None:
        cfg, dev = model.config, model.embed_tokens.weight.device
        self.p, self.link, self.width, self.mask_id = params, link, width, cfg.mask_token_id
        self.block_causal = cfg.attention == "block_causal"
        self.cache: KVCache | None = model.new_kv_cache(slots, width) if params.use_cache else None
        self.tokens = torch.full((slots, width), cfg.mask_token_id, dtype=torch.long, device=dev)
        self.steps = torch.zeros((slots, width), dtype=torch.long, device=dev)
        self.logp = torch.zeros((slots, width), device=dev)
        self.ent = torch.zeros((slots, width), device=dev)
        self.row_steps = torch.zeros(slots, dtype=torch.long, device=dev)
        # Each slot's image features (a text row's stay zero, never read): part of the prompt, like its ids.
        self.images = (torch.zeros((slots, cfg.image_tokens, cfg.hidden_size), dtype=model.embed_tokens.weight.dtype,
                                   device=dev) if cfg.image_tokens else None)
        self.rows: list[RowRecord | None] = [None] * slots
        self.pending: list[FinishedRows] = []

    def live(self) -> list[int]:
        return [s for s, r in enumerate(self.rows) if r is not None]

    def free(self) -> list[int]:
        return [s for s, r in enumerate(self.rows) if r is None]

    def admit(self, items: list[PromptItem]) -> Admitted:
        """Put `items` into the lowest free slots (one canvas upload)."""
        free = self.free()[: len(items)]
        canvas = torch.full((len(items), self.width), self.mask_id, dtype=torch.long)
        rows = []
        for j, (s, item) in enumerate(zip(free, items)):
            canvas[j, : len(item.prompt)] = torch.tensor(item.prompt)
            rows.append(RowRecord(item, *canvas_of(len(item.prompt), self.p, self.block_causal)))
            self.rows[s] = rows[-1]
        slots = self.link.to_device(free, torch.long)
        self.tokens[slots] = self.link.to_device(canvas, torch.long)
        for t in (self.steps, self.logp, self.ent, self.row_steps):
            t[slots] = 0
        if self.images is not None:
            for s, item in zip(free, items):
                self.images[s] = 0 if item.image is None else item.image
        return Admitted(slots, rows)

    def image_rows(self, rows: torch.Tensor | int) -> torch.Tensor | None:
        """Image features of slots `rows` (a slot tensor, or the first `rows` slots); None for a text model."""
        if self.images is None:
            return None
        return self.images[:rows] if isinstance(rows, int) else self.images[rows]

    def block_tokens(self, c0: torch.Tensor) -> torch.Tensor:
        """[rows, B] tokens of the blocks at columns `c0` of slots [0, rows)."""
        return self.tokens[: c0.shape[0]].gather(1, c0[:, None] + torch.arange(self.p.block_size, device=c0.device))

    def compact(self, live: list[int]) -> None:
        """Move the live rows to slots [0, n): once the queue is empty nothing refills the finished
        slots below the highest live one, and every pass would compute them. One copy of the live
        rows' canvases and cache rows (at most log_{4/3}(slots) times a decode)."""
        n = len(live)
        src = self.link.to_device(live, torch.long)
        for t in (self.tokens, self.steps, self.logp, self.ent, self.row_steps,
                  *(() if self.images is None else (self.images,))):
            t[:n] = t[src]
        if self.cache is not None:
            self.cache.move(src)
        self.rows = [self.rows[s] for s in live] + [None] * (len(self.rows) - n)

    def close(self, ends: dict[int, RowEnd]) -> None:
        """End of a block: the rows of slots `ends` leave (their canvases start copying to the host),
        every other live row moves to its next block."""
        if ends:
            slots = self.link.to_device(list(ends), torch.long)
            self.pending.append(FinishedRows(
                [self.rows[s] for s in ends], list(ends.values()),
                self.link.copy_out(torch.stack([self.tokens[slots], self.steps[slots]])),
                self.link.copy_out(torch.stack([self.logp[slots], self.ent[slots]])),
                self.link.copy_out(self.row_steps[slots])))
        for s, row in enumerate(self.rows):
            if s in ends:
                self.rows[s] = None
            elif row is not None:
                row.c0 += self.p.block_size

    def emit(self) -> Iterator[tuple[int, Trajectory]]:
        """Trajectories of rows whose async copy an earlier sync completed."""
        for done in self.pending:
            ids_steps, logp_ent = self.link.host_list(done.ids_steps), self.link.host_list(done.logp_ent)
            forwards = self.link.host_list(done.forwards)
            for j, (row, how) in enumerate(zip(done.rows, done.ends)):
                yield row.item.index, self._trajectory(row, how, ids_steps[0][j], ids_steps[1][j], logp_ent[0][j],
                                                       logp_ent[1][j], forwards[j])
        self.pending.clear()

    def _trajectory(self, row: RowRecord, how: RowEnd, ids: list[int], steps: list[int], logp: list[float],
                    ent: list[float], forwards: int) -> Trajectory:
        start, end, c1 = row.start, how.end, row.c0 + self.p.block_size
        return Trajectory(prompt_ids=list(row.item.prompt), response_ids=ids[start:end], step_map=steps[start:end],
                          logprobs=logp[start:end], entropies=ent[start:end], block_size=self.p.block_size,
                          finish_reason=how.reason, num_forwards=forwards, tail_ids=ids[end:c1],
                          tail_steps=steps[end:c1],
                          canvas_len=0 if self.block_causal else self.p.max_new_tokens)
