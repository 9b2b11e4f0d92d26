"""Tokenizer loading (local only) and the tiny character-level tokenizer of the built-in task.

Tiny tokenizer ids (stable; extra tokens follow in the order given):
    0 <|pad|>   1 <|endoftext|> (eos)   2 <|MASK|> (mask)   3 <|im_start|>   4 <|im_end|>   5 <|unk|>
    6 "\\n"     7..101 printable ASCII, id = ord(char) - 25: 7 " ", 23 "0", 32 "9", 40 "A", 65 "Z",
    72 "a", 97 "z", 98 "{", 99 "|", 100 "}", 101 "~"   (102 ids in all)
Every character is one token, so digits, operators, letters and `\\boxed{}` all decode back to
the exact text; characters outside this set become <|unk|>.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

PAD, EOS, MASK, IM_START, IM_END, UNK = (
    "<|pad|>", "<|endoftext|>", "<|MASK|>", "<|im_start|>", "<|im_end|>", "<|unk|>")
SPECIAL_TOKENS = [PAD, EOS, MASK, IM_START, IM_END, UNK]
CHARACTERS = ["\n", *(chr(c) for c in range(32, 127))]

# Qwen-style chat turns, so prompts for the tiny model are built the same way as for SDAR/TraDo.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local checkpoint directory (never downloads, no remote code)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    # AutoTokenizer also reads config.json and warns that model_type "sdar"/"llada"/"Dream" is not
    # a transformers model; the tokenizer does not depend on it, so that warning is silenced here.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:  # transformers' messages do not name the directory
        raise ValueError(f"{path}: no loadable tokenizer (tokenizer.json or tokenizer_config.json with its "
                         f"vocabulary files): {e}") from e
    finally:
        hf_logging.set_verbosity(previous)


def build_tiny_tokenizer(extra_tokens: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Character-level tokenizer (ids in the module docstring); `extra_tokens` are whole-word tokens
    (e.g. "\\boxed") matched before splitting into characters."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # concatenate pieces: no spaces between characters
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, mask_token=MASK, unk_token=UNK,
        additional_special_tokens=[IM_START, IM_END], clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE)
    if extra_tokens:
        tokenizer.add_tokens(extra_tokens)
    return tokenizer
