"""build_prompt: the tokenizer's chat template when there is one, the raw question otherwise."""
import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tasks.prompts import MATH_INSTRUCTION, build_prompt

TEMPLATE = ("{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}"
            "{% if add_generation_prompt %}<a>{% endif %}")
MATH_ROW = {"question": "What is 2+2?", "ground_truth_answer": "4"}
FUNCTION_ROW = {"question": "Write add.", "test_method": "function", "test_list": ["assert add(1, 1) == 2"],
                "prefix": "def add(a, b):\n"}
STDIO_ROW = {"question": "Echo the input.", "test_method": "stdio", "test_input": ["x"], "test_output": ["x"]}


def char_tokenizer(chat_template=None):
    vocab = {c: i for i, c in enumerate(["<unk>", *map(chr, range(32, 127)), "\n"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", chat_template=chat_template)


def test_math_chat_prompt_uses_the_template_and_the_instruction():
    prompt = build_prompt(MATH_ROW, char_tokenizer(TEMPLATE), "auto", "math")
    assert prompt == f"<u>What is 2+2?\n{MATH_INSTRUCTION}</u><a>"
    assert build_prompt(MATH_ROW, char_tokenizer(TEMPLATE), "chat", "math") == prompt
    assert MATH_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."


def test_code_prompts_carry_the_instruction_and_the_prefix_after_the_turn():
    tokenizer = char_tokenizer(TEMPLATE)
    function = build_prompt(FUNCTION_ROW, tokenizer, "chat", "code")
    assert function.startswith("<u>Write add.\nPlace your code within a single Python code block")
    assert function.endswith("</u><a>def add(a, b):\n")  # the response continues the prefix
    stdio = build_prompt(STDIO_ROW, tokenizer, "chat", "code")
    assert stdio.startswith("<u>This is the problem:\nEcho the input.\n") and "input()" in stdio
    assert stdio.endswith("</u><a>")


def test_plain_is_the_question_and_auto_falls_back_to_it():
    assert build_prompt({"question": "47+85=", "ground_truth_answer": "132"}, None, "plain", "math") == "47+85="
    assert build_prompt(MATH_ROW, char_tokenizer(), "auto", "math") == "What is 2+2?"
    assert build_prompt(FUNCTION_ROW, char_tokenizer(TEMPLATE), "plain", "code") == "Write add.def add(a, b):\n"


def test_chat_without_a_template_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompt(MATH_ROW, char_tokenizer(), "chat", "math")
    with pytest.raises(ValueError, match="unknown prompt template"):
        build_prompt(MATH_ROW, char_tokenizer(TEMPLATE), "fancy", "math")
    with pytest.raises(ValueError, match="unknown task kind"):
        build_prompt(MATH_ROW, char_tokenizer(TEMPLATE), "chat", "poetry")


def test_tiny_tokenizer_chat_template_is_used():
    tiny = pytest.importorskip("models.tokenizer").build_tiny_tokenizer()
    prompt = build_prompt(MATH_ROW, tiny, "auto", "math")
    assert prompt == f"<|im_start|>user\nWhat is 2+2?\n{MATH_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
