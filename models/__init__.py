"""Pure-torch models: one decoder for every family, HF checkpoint I/O, tokenizers (docs/design.md §4)."""
from .checkpoint import load_model, save_model
from .config import ModelConfig
from .kv_cache import KVCache
from .tiny import write_tiny_checkpoint
from .tokenizer import build_tiny_tokenizer, load_tokenizer
from .transformer import DiffusionLM
from .vision import DiffusionVLM

__all__ = ["ModelConfig", "DiffusionLM", "DiffusionVLM", "KVCache", "load_model", "save_model", "load_tokenizer",
           "build_tiny_tokenizer", "write_tiny_checkpoint"]
