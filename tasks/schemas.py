"""Row schemas of the reference data format (Gen-Verse/dLLM-RL JSON fields).

Validation only checks a row; the row dict itself travels on unchanged (extra fields included),
because reward functions may read fields we do not know about."""
from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

Kind = Literal["math", "code", "choice"]
Row = dict[str, Any]
RewardFn = Callable[[str, Row], dict[str, Any]]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("is blank")
    return text


# A blank question is a prompt of the instruction alone: the row would train on nothing.
Text = Annotated[StrictStr, AfterValidator(_not_blank)]


class MathRow(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    question: Text
    # Some datasets store numeric answers as numbers; the math reward compares str(answer).
    ground_truth_answer: StrictStr | StrictInt | StrictFloat

    @field_validator("ground_truth_answer", mode="plain")
    @classmethod
    def _answer(cls, value: Any) -> str | int | float:
        # Checked here, not by the union, so a wrong type gets one message, not one per member.
        # A blank answer normalises to "", which \boxed{.} matches; NaN reads as "nan".
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"must be a string or a number, got {type(value).__name__}")
        if isinstance(value, str):
            return _not_blank(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


class CodeRow(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    question: Text
    test_method: Literal["function", "stdio"]
    test_list: list[str] | None = None  # assert statements, for "function"
    test_input: list[str] | None = None  # one stdin text per test, for "stdio"
    test_output: list[str] | None = None
    # Finite: the sandbox's CPU limit is computed from it.
    test_time_limit: StrictInt | StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    prefix: str | None = None  # code the response continues (function tests)

    @model_validator(mode="after")
    def _tests_match_method(self) -> "CodeRow":
        if self.test_method == "function" and not self.test_list:
            raise ValueError("test_method 'function' needs a non-empty test_list")
        if self.test_method == "stdio":
            if not self.test_input or self.test_output is None:
                raise ValueError("test_method 'stdio' needs non-empty test_input and test_output")
            if len(self.test_input) != len(self.test_output):
                raise ValueError(f"test_input has {len(self.test_input)} items but test_output "
                                 f"has {len(self.test_output)}")
        return self


class ChoiceRow(BaseModel):
    """A multiple-choice question, optionally about an image (the reference's multimodal JSON rows)."""
    model_config = ConfigDict(extra="allow", strict=True)

    question: Text
    ground_truth_answer: StrictStr  # the option letter
    image: StrictStr | None = None  # a path (under task.params.image_root) or a data URI


ROW_MODELS: dict[str, type[BaseModel]] = {"math": MathRow, "code": CodeRow, "choice": ChoiceRow}


def validate_row(raw: Any, kind: Kind) -> Row:
    """Return `raw` unchanged if it is a valid row of `kind`, else raise ValueError saying why."""
    if kind not in ROW_MODELS:
        raise ValueError(f"unknown row kind {kind!r}; choose from {sorted(ROW_MODELS)}")
    if not isinstance(raw, dict):
        raise ValueError(f"a row must be a JSON object, got {type(raw).__name__}")
    ROW_MODELS[kind].model_validate(raw)  # pydantic.ValidationError is a ValueError
    return raw
