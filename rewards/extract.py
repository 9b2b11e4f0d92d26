"""Pull the final answer or program out of a model response. Every function is linear in the
response length: responses can be megabytes of garbage and extraction runs in the caller."""
from __future__ import annotations

import re
from collections import deque

BOX_COMMANDS = ("\\boxed", "\\fbox")
# A sign is "-" or U+2212 (typeset minus), except after a digit: "3-5" is a range or a difference.
_NUMBER = re.compile(r"(?:(?<!\d)[-\u2212])?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")


def _match_braces(text: str, open_at: int) -> int | None:
    """Index of the brace closing text[open_at] == '{', skipping backslash escapes like \\{ ."""
    depth, i, n = 0, open_at, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (nested braces allowed), or None.

    Only the last command is considered: retrying earlier ones on an unbalanced tail would be
    quadratic on adversarial input."""
    start, command = max((text.rfind(c), c) for c in BOX_COMMANDS)
    if start < 0:
        return None
    i = start + len(command)
    while i < len(text) and text[i].isspace():  # TeX skips any whitespace before an argument: "\\boxed\n{5}"
        i += 1
    if i < len(text) and text[i] == "{":
        end = _match_braces(text, i)
        return None if end is None else text[i + 1 : end].strip()
    if i > start + len(command):  # "\boxed 5": the token after the space
        token = re.match(r"[^\s$]+", text[i:])
        return token.group(0) if token else None
    return None


def extract_answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer>, unboxed if it holds a \\boxed{}."""
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        return None
    inner = text[start + len("<answer>") : end].strip()
    return extract_boxed(inner) or inner or None


def _last_match(pattern: str | re.Pattern, text: str, flags: int = 0) -> re.Match | None:
    last = deque(re.finditer(pattern, text, flags), maxlen=1)  # streams: no list of all matches
    return last[0] if last else None


def extract_last_number(text: str) -> str | None:
    last = _last_match(_NUMBER, text)
    return None if last is None else last.group(0).replace(",", "").replace("\u2212", "-")


ANSWER_EXTRACTORS = {
    "boxed": extract_boxed,
    "answer_tag": extract_answer_tag,
    "last_number": extract_last_number,
}


def extract_answer(text: str, fallbacks: tuple[str, ...] = ()) -> tuple[str | None, str | None]:
    """(answer, extractor name): \\boxed first, then each configured fallback in order."""
    for name in ("boxed", *fallbacks):
        if name not in ANSWER_EXTRACTORS:
            raise ValueError(f"unknown answer fallback {name!r}; choose from {sorted(ANSWER_EXTRACTORS)}")
        answer = ANSWER_EXTRACTORS[name](text)
        if answer:
            return answer, name
    return None, None


def extract_code(text: str, language: str | None = "python") -> str | None:
    """The last fenced ```language block; else the last fenced block of any language."""
    fences = [rf"```{re.escape(language)}[ \t]*\n(.*?)```"] if language else []
    fences.append(r"```[^\n`]*\n(.*?)```")
    for pattern in fences:
        last = _last_match(pattern, text, re.DOTALL)
        if last is not None:
            return last.group(1)
    return None
