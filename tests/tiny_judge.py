"""Tiny autoregressive judges saved to disk like real checkpoints (a Qwen2 causal LM + the tiny
character tokenizer with its chat template), built offline for the judge tests."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from models.tokenizer import build_tiny_tokenizer


def write_tiny_judge(path: Path, answer: str | None = None, seed: int = 0) -> Path:
    """answer=None: random weights (its outputs are gibberish). answer="1": the layers are zeroed so
    the next token depends only on the last one; after the chat template's final "\\n" the model
    writes `answer` (one character) and then EOS, through the real generate path."""
    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(
        # head_dim 64: a size every vLLM attention backend supports
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    if answer is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "o_proj" in name or "down_proj" in name:
                    p.zero_()  # every layer adds 0 to the residual stream
            a, b = torch.zeros(128), torch.zeros(128)
            a[0], b[1] = 1.0, 1.0
            emb = model.model.embed_tokens.weight
            emb[:] = a  # every token looks the same ...
            emb[tok.convert_tokens_to_ids(answer)] = b  # ... except the answer
            head = model.lm_head.weight
            head.zero_()
            head[tok.convert_tokens_to_ids(answer)] = 20 * a  # anything -> answer
            head[tok.eos_token_id] = 20 * b  # answer -> EOS
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
