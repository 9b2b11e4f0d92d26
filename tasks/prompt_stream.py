"""An endless, epoch-wise shuffled stream of prompts with a resumable cursor.

Epoch e visits every row once in an order fixed by (seed, e) alone, so a run restored from a
saved cursor continues with exactly the prompts the uninterrupted run would have drawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import BaseModel, NonNegativeInt

from .schemas import Row
from .splits import hash_unit


class Cursor(BaseModel):
    """Position of the next prompt: row `index` of epoch `epoch`'s order."""

    epoch: NonNegativeInt = 0
    index: NonNegativeInt = 0


@dataclass(frozen=True)
class Sample:
    uid: str  # unique within a run: every draw of a row gets its own uid
    row: Row


class PromptStream:
    def __init__(self, rows: Sequence[Row], seed: int, shuffle: bool = True):
        if not rows:
            raise ValueError("PromptStream needs at least one row")
        self.rows = rows
        self.seed = seed
        self.shuffle = shuffle
        self.cursor = Cursor()
        self._order: tuple[int, list[int]] | None = None  # (epoch, order) of the current epoch

    def order(self, epoch: int) -> list[int]:
        """Row indices in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return list(range(len(self.rows)))
        # Sorting by a keyed hash, not random.shuffle: the order is then fixed by (seed, epoch)
        # on any machine and Python version.
        return sorted(range(len(self.rows)), key=lambda i: hash_unit("epoch", self.seed, epoch, i))

    def next_batch(self, n: int) -> list[Sample]:
        """The next n prompts, running on into the next epoch when this one is used up."""
        batch = []
        for _ in range(n):
            epoch, index = self.cursor.epoch, self.cursor.index
            if self._order is None or self._order[0] != epoch:
                self._order = (epoch, self.order(epoch))
            batch.append(Sample(uid=f"e{epoch}-{index}", row=self.rows[self._order[1][index]]))
            self.cursor = (Cursor(epoch=epoch, index=index + 1) if index + 1 < len(self.rows)
                           else Cursor(epoch=epoch + 1, index=0))
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_rows": len(self.rows), "shuffle": self.shuffle,
                **self.cursor.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a cursor saved by `state_dict`; the stream must be over the same rows."""
        saved = (state["seed"], state["num_rows"], state["shuffle"])
        if saved != (self.seed, len(self.rows), self.shuffle):
            raise ValueError(f"sampler state is for (seed, num_rows, shuffle) = {saved}, "
                             f"but this stream has {(self.seed, len(self.rows), self.shuffle)}")
        cursor = Cursor(epoch=state["epoch"], index=state["index"])
        if cursor.index >= len(self.rows):
            raise ValueError(f"saved cursor index {cursor.index} is past the {len(self.rows)} rows")
        self.cursor = cursor
