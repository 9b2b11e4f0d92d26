"""Autoregressive judge models behind one interface: prompts in, parsed verdicts out.

    backend = make_backend(JudgeConfig(backend="transformers", model="/data/judge"))
    backend.generate(["Is 2+2=4 correct? ..."])  -> ["\\boxed{1}"]

Both backends wrap each prompt as one user turn with the judge tokenizer's chat template (plain
text when it has none), so they see the same prompts. `transformers`: any causal LM from a local
directory on CPU or GPU (tests, small judges). `vllm`: `vllm.LLM` with tensor parallelism over the
worker's GPUs and batched `generate` (imported only when chosen; `pip install .[vllm]`).
"""
from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .judge_prompts import JudgePromptConfig


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["transformers", "vllm"] = "transformers"
    model: str | None = None  # local directory of the judge checkpoint (never downloaded)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)  # 0 = greedy
    batch_size: int = Field(16, ge=1)  # transformers: prompts per generate call
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # transformers: auto = cuda when the worker has a GPU, else cpu
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)  # vllm
    max_model_len: int | None = Field(None, ge=16)  # vllm
    # Chat-template switch of Qwen3-style judges (a thinking judge needs a far larger max_new_tokens).
    enable_thinking: bool = False
    seed: int = 0
    prompts: JudgePromptConfig = JudgePromptConfig()


class JudgeBackend(Protocol):
    def generate(self, prompts: list[str]) -> list[str]: ...


def chat_prompt(tokenizer: Any, text: str, enable_thinking: bool) -> str:
    """One user turn in the judge's own chat format, ready for generation."""
    if not getattr(tokenizer, "chat_template", None):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=enable_thinking)


class TransformersBackend:
    def __init__(self, cfg: JudgeConfig, num_gpus: float = 0.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if num_gpus and torch.cuda.is_available()
                                                                else "cpu")
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
        self.tokenizer.padding_side = "left"  # generation continues every row at the same column
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model, local_files_only=True, dtype=dtype).to(
            self.device).eval()

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        texts = [chat_prompt(self.tokenizer, p, self.cfg.enable_thinking) for p in prompts]
        out: list[str] = []
        sampling = dict(do_sample=True, temperature=self.cfg.temperature) if self.cfg.temperature > 0 else dict(
            do_sample=False)
        for i in range(0, len(texts), self.cfg.batch_size):
            batch = self.tokenizer(texts[i:i + self.cfg.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=False).to(self.device)
            with torch.no_grad():
                torch.manual_seed(self.cfg.seed + i)
                ids = self.model.generate(**batch, max_new_tokens=self.cfg.max_new_tokens,
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling)
            out += self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


class VLLMBackend:
    def __init__(self, cfg: JudgeConfig, num_gpus: float = 1.0) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError("judge.backend=vllm needs vLLM: pip install '.[vllm]' on a GPU machine") from exc
        self.cfg, self.vllm = cfg, vllm
        tp = max(1, int(num_gpus))
        # Inside a Ray actor the worker's GPUs are its CUDA_VISIBLE_DEVICES: vLLM's tensor-parallel
        # ranks run as local processes on them instead of asking Ray for a placement group of its own.
        self.llm = vllm.LLM(model=cfg.model, tensor_parallel_size=tp, dtype=cfg.dtype,
                            gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
                            seed=cfg.seed, trust_remote_code=False,
                            distributed_executor_backend="mp" if tp > 1 else None)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str]) -> list[str]:
        params = self.vllm.SamplingParams(temperature=self.cfg.temperature, max_tokens=self.cfg.max_new_tokens,
                                          seed=self.cfg.seed)
        texts = [chat_prompt(self.tokenizer, p, self.cfg.enable_thinking) for p in prompts]
        return [o.outputs[0].text for o in self.llm.generate(texts, params, use_tqdm=False)]


def make_backend(cfg: JudgeConfig, num_gpus: float = 0.0) -> JudgeBackend:
    if cfg.model is None:
        raise ValueError("judge.model is not set: point it at a local judge checkpoint directory")
    return (VLLMBackend if cfg.backend == "vllm" else TransformersBackend)(cfg, num_gpus)

