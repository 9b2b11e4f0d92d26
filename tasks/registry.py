"""Tasks by name: where rows come from, how prompts are templated, which reward scores them.

    task = get_task("arith", max_digits=3)
    task.train_rows(10_000, seed=0); task.eval_rows(500, seed=0); task.reward(text, row)

Train and eval rows of one seed never share a question (see splits.py). `reward_path` is the
string form of the reward (what `rewards.get_reward` takes), for processes that resolve it
themselves, e.g. reward workers."""
from __future__ import annotations

import functools
import inspect
import random
from dataclasses import dataclass
from typing import Callable, Protocol, get_args

from .builtin.arith import sample_arith
from .builtin.countdown import sample_countdown
from .builtin.digits import sample_digits
from .builtin.shapes import sample_shapes
from .builtin.sudoku4 import sample_sudoku4
from .image_rows import image_checker
from .loaders import OnError, load_rows
from .prompts import Template
from .readers import DatasetError
from .schemas import Kind, RewardFn, Row
from .splits import Split, check_eval_fraction, is_eval, row_key, split_rows

DEFAULT_EVAL_FRACTION = 0.1


class RowSource(Protocol):
    skipped: tuple[str, ...]  # rows left out as malformed (on_error="skip"), one line each

    def train_rows(self, n: int | None, seed: int) -> list[Row]: ...
    def eval_rows(self, n: int | None, seed: int) -> list[Row]: ...


@dataclass(frozen=True)
class Task:
    name: str
    kind: Kind
    template: Template
    reward_path: str  # "math", "code" or "package.module:function"
    rows: RowSource

    def train_rows(self, n: int | None, seed: int) -> list[Row]:
        rows = self.rows.train_rows(n, seed)
        if not rows and n != 0:  # else the prompt stream fails later without naming a key
            raise DatasetError(f"task {self.name!r} has an empty train split: give it more rows with "
                               "task.params.path or a smaller task.params.eval_fraction")
        return rows

    def eval_rows(self, n: int | None, seed: int) -> list[Row]:
        rows = self.rows.eval_rows(n, seed)
        if not rows and n != 0:  # an evaluation of nothing would log no figure and look like a pass
            raise DatasetError(f"task {self.name!r} has an empty eval split: give it rows with "
                               "task.params.eval_path or a larger task.params.eval_fraction, or set "
                               "trainer.eval_every=0 (mode=eval needs eval rows)")
        return rows

    @property
    def skipped_rows(self) -> tuple[str, ...]:
        return self.rows.skipped

    @functools.cached_property
    def reward(self) -> RewardFn:
        return resolve_reward(self.reward_path)


def resolve_reward(path: str) -> RewardFn:
    """The reward `path` names ("math", "code" or "package.module:function"), resolved by
    rewards.get_reward (imported here, so loading rows never needs the reward stack)."""
    from rewards.registry import get_reward

    try:
        return get_reward(path)
    except ValueError as exc:
        raise ValueError(f"task.reward={path!r} cannot be loaded: {exc}; use math, code or "
                         "package.module:function") from exc


@dataclass(frozen=True)
class GeneratedRows:
    """Rows drawn from a generator; train and eval use separate seed streams and each keeps only
    the rows of its side of the hash partition. Eval rows are distinct questions."""

    sample: Callable[[random.Random], Row]
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    skipped: tuple[str, ...] = ()

    def train_rows(self, n: int | None, seed: int) -> list[Row]:
        return self._draw(n, seed, want_eval=False)

    def eval_rows(self, n: int | None, seed: int) -> list[Row]:
        return self._draw(n, seed, want_eval=True)

    def _draw(self, n: int | None, seed: int, want_eval: bool) -> list[Row]:
        if n is None:
            raise ValueError("generated tasks have no natural size; pass the number of rows")
        side = "eval" if want_eval else "train"
        rng = random.Random(f"{side}:{seed}")  # str seeds are hashed with sha512: stable
        rows: list[Row] = []
        seen: set[str] = set()
        attempts = 0
        while len(rows) < n:
            if attempts == 100 * n + 1000:
                raise ValueError(f"found only {len(rows)} of {n} distinct {side} rows: the problem "
                                 "space is too small (widen the difficulty knobs or ask for fewer)")
            attempts += 1
            row = self.sample(rng)
            if is_eval(row, seed, self.eval_fraction) != want_eval:
                continue
            if want_eval and row_key(row) in seen:
                continue
            seen.add(row_key(row))
            rows.append(row)
        return rows


@dataclass(frozen=True)
class FileRows:
    """Rows loaded from files. Without an eval file, one file is split by the hash partition."""

    train: list[Row]
    eval: list[Row] | None = None
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    skipped: tuple[str, ...] = ()

    def train_rows(self, n: int | None, seed: int) -> list[Row]:
        return (self.train if self.eval is not None else self._split(seed).train)[:n]

    def eval_rows(self, n: int | None, seed: int) -> list[Row]:
        return (self.eval if self.eval is not None else self._split(seed).eval)[:n]

    def _split(self, seed: int) -> Split:
        return split_rows(self.train, seed, self.eval_fraction)


# The factories' positional-only parameters are the registry's; their keyword ones are the task's
# knobs (task.params, see task_knobs).
def _builtin(name: str, sample: Callable[..., Row], kind: Kind = "math", /,
             eval_fraction: float = DEFAULT_EVAL_FRACTION, **knobs: object) -> Task:
    check_eval_fraction(eval_fraction)
    bound = functools.partial(sample, **knobs)
    bound(random.Random(0))  # check the knobs now, not on the first draw
    reward_path = f"{sample.__module__}:reward"  # each built-in module defines `reward`
    return Task(name, kind, "plain", reward_path, GeneratedRows(bound, eval_fraction))


def _file_task(name: str, kind: Kind, check: Callable[[Row], str | None] | None = None, /,
               path: str | None = None, eval_path: str | None = None, on_error: OnError = "raise",
               split: str | None = None, template: Template = "auto",
               eval_fraction: float = DEFAULT_EVAL_FRACTION, reward: str | None = None) -> Task:
    if not path:  # conf/task/*.yaml leave it null: say which key, not a TypeError from pathlib
        raise ValueError(f"task {name!r} needs task.params.path: a JSONL, JSON or Parquet file or a "
                         "datasets save_to_disk directory")
    if template not in get_args(Template):  # else only the first prompt built would say so
        raise ValueError(f"task.params.template={template!r}; choose from {list(get_args(Template))}")
    check_eval_fraction(eval_fraction)
    train = load_rows(path, kind, on_error, split, check)
    evals = load_rows(eval_path, kind, on_error, split, check) if eval_path else None
    skipped = tuple(str(e) for e in train.errors + (evals.errors if evals else []))
    return Task(name, kind, template, reward or kind,
                FileRows(train.rows, evals.rows if evals else None, eval_fraction, skipped))


def _image_file_task(name: str, path: str | None = None, image_root: str | None = None, min_image_side: int = 8,
                     **params: object) -> Task:
    """Multiple-choice rows about images: each row's `image` under `image_root`, opened when loading."""
    return _file_task(name, "choice", image_checker(image_root, min_image_side), path=path, **params)


TASKS: dict[str, functools.partial[Task]] = {
    "arith": functools.partial(_builtin, "arith", sample_arith),
    "countdown": functools.partial(_builtin, "countdown", sample_countdown),
    "digits": functools.partial(_builtin, "digits", sample_digits),
    "sudoku4": functools.partial(_builtin, "sudoku4", sample_sudoku4),
    "shapes": functools.partial(_builtin, "shapes", sample_shapes, "choice"),
    "math_jsonl": functools.partial(_file_task, "math_jsonl", "math"),
    "code_jsonl": functools.partial(_file_task, "code_jsonl", "code"),
    "image_json": functools.partial(_image_file_task, "image_json"),
}


def task_knobs(name: str) -> list[str]:
    """The knobs task `name` takes: its factory's keyword parameters and, where the factory passes
    **knobs on, those of the function receiving them (a built-in task's sampler; _file_task)."""
    factory = TASKS[name]
    receivers = {_builtin: factory.args[1:2], _image_file_task: (_file_task,)}.get(factory.func, ())
    return sorted({p.name for fn in (factory, *receivers) for p in inspect.signature(fn).parameters.values()
                   # with a default: a sampler's rng, passed by _builtin, has none
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty})


def check_knobs(name: str, knobs: dict[str, object]) -> None:
    """A knob task `name` does not take fails now, by its task.params key, rather than as the
    factory's TypeError once get_task runs (after Ray has started)."""
    allowed = task_knobs(name)
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise ValueError(f"{', '.join(f'task.params.{k}' for k in unknown)}: task {name!r} takes no such knob; "
                         f"allowed keys are {allowed}")


def get_task(name: str, **knobs: object) -> Task:
    """The task `name` configured by `knobs`: a built-in task's difficulty knobs and
    eval_fraction; a file task's path, eval_path, on_error, split (of a saved DatasetDict),
    template, eval_fraction and reward (a reward name or "module:function"; default: its kind);
    image_json's also image_root and min_image_side."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](**knobs)
