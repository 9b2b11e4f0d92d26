"""Turn a task row into prompt text: the tokenizer's chat template, or the raw question.

The instruction sentences match the prompts TraDo/SDAR models were RL-trained with in
Gen-Verse/dLLM-RL (sample/trado_rl_rollout.py), so those checkpoints see familiar prompts;
the trailing spaces in the code instructions are theirs too."""
from __future__ import annotations

from typing import Any, Literal

from .schemas import Kind, Row

Template = Literal["chat", "plain", "auto"]

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_FUNCTION_INSTRUCTION = ("Place your code within a single Python code block ```python ```. "
                             "Do not include more than one code block. ")
CODE_STDIO_INSTRUCTION = ("You should put your code in ```python ```. Use input() to read input "
                          "and print() to produce output in your script. ")
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Where a row's image goes in its prompt text (LLaVA's DEFAULT_IMAGE_TOKEN): before the question.
IMAGE_MARK = "<image>"


def user_message(row: Row, kind: Kind) -> str:
    """The user turn of a chat prompt: the question plus the task's answer-format instruction."""
    question = row["question"]
    if kind == "choice":
        return f"{question}\n{CHOICE_INSTRUCTION}"
    if kind == "math":
        return f"{question}\n{MATH_INSTRUCTION}"
    if kind == "code":
        if row["test_method"] == "stdio":
            return f"This is the problem:\n{question}\n{CODE_STDIO_INSTRUCTION}"
        return f"{question}\n{CODE_FUNCTION_INSTRUCTION}"
    raise ValueError(f"unknown task kind {kind!r}; choose 'math', 'code' or 'choice'")


def response_prefix(row: Row, kind: Kind) -> str:
    """Text the response is forced to start with: a function test's code `prefix` (e.g. the
    signature), which the code reward prepends to the response before extracting code."""
    if kind == "code" and row.get("test_method") == "function":
        return row.get("prefix") or ""
    return ""


def build_prompt(row: Row, tokenizer: Any, template: Template = "auto", kind: Kind = "math") -> str:
    """Prompt text for `row`.

    "chat": the tokenizer's chat template around `user_message` (error if it has none);
    "plain": the question exactly as written (built-in tasks phrase it as a complete prompt);
    "auto": "chat" when the tokenizer has a chat template, else "plain".
    Both end with the row's response prefix, if any; a row with an image starts its question with
    IMAGE_MARK."""
    if template not in ("chat", "plain", "auto"):
        raise ValueError(f"unknown prompt template {template!r}; choose 'chat', 'plain' or 'auto'")
    has_chat = getattr(tokenizer, "chat_template", None) is not None
    if template == "chat" and not has_chat:
        raise ValueError("template='chat' but the tokenizer has no chat_template; "
                         "use 'plain' or 'auto'")
    mark = f"{IMAGE_MARK}\n" if row.get("image") and IMAGE_MARK not in row["question"] else ""
    if template == "plain" or not has_chat:
        return mark + row["question"] + response_prefix(row, kind)
    question = user_message(row, kind)
    text = tokenizer.apply_chat_template([{"role": "user", "content": mark + question}], add_generation_prompt=True,
                                         tokenize=False)
    # A template that reads another key (m["text"]) or none renders every prompt without its question
    # (the image mark is left out of the check: a vision template may render it as its own tokens).
    if question.strip() not in text:
        raise ValueError(f"the tokenizer's chat_template left the user message out of the prompt (it rendered "
                         f"{text[:200]!r}); fix the template or set task.template=plain")
    return text + response_prefix(row, kind)


def encode_prompt(row: Row, tokenizer: Any, template: Template = "auto", kind: Kind = "math",
                  image_ids: list[int] | None = None) -> list[int]:
    """`build_prompt`'s text as token ids (the template already holds any special tokens); a row's
    image becomes `image_ids`, the model's image placeholders (models/vision.py), at IMAGE_MARK."""
    text = build_prompt(row, tokenizer, template, kind)
    if not row.get("image"):
        return tokenizer.encode(text, add_special_tokens=False)
    if not image_ids:
        raise ValueError("the row has an image but the model takes no images (no image placeholder ids)")
    before, _, after = text.partition(IMAGE_MARK)
    return (tokenizer.encode(before, add_special_tokens=False) + list(image_ids)
            + tokenizer.encode(after, add_special_tokens=False))
