"""The tiny character tokenizer and the tiny checkpoint, loaded the way a real checkpoint is."""
import torch

from models import build_tiny_tokenizer, load_model, load_tokenizer, write_tiny_checkpoint

TEXTS = ["12+345=357", "What is (7-2)*3/5?\nAnswer: \\boxed{3}.", "  a  b,c.  ", "ZzAa 0 9\n\n",
         "<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\n\\boxed{2}<|endoftext|>"]


def test_ids_are_small_and_stable():
    tok = build_tiny_tokenizer()
    assert len(tok) == 102
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id, tok.unk_token_id) == (0, 1, 2, 5)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "\n", " ", "0", "A", "a", "\\", "{", "}"]) \
        == [3, 4, 6, 7, 23, 40, 72, 67, 98, 100]
    assert tok("é")["input_ids"] == [5]


def test_decode_reproduces_text_exactly(tmp_path):
    tok = build_tiny_tokenizer()
    tok.save_pretrained(str(tmp_path))
    loaded = load_tokenizer(tmp_path)  # through AutoTokenizer, as for a real checkpoint
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert tok.decode(ids) == text and loaded.decode(ids) == text
    assert loaded.decode(tok("\\boxed{4}<|endoftext|>")["input_ids"], skip_special_tokens=True) == "\\boxed{4}"


def test_extra_tokens_are_whole_words_after_the_base_vocab():
    tok = build_tiny_tokenizer(["\\boxed", "answer"])
    ids = tok("\\boxed{1} answer")["input_ids"]
    assert ids == [102, 98, 24, 100, 7, 103] and tok.decode(ids) == "\\boxed{1} answer"


def test_tiny_checkpoint_loads_like_a_real_one(tmp_path):
    rng_before = torch.get_rng_state()
    path = write_tiny_checkpoint(tmp_path / "a", seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the seed does not leak into the caller
    model, tok = load_model(path), load_tokenizer(path)
    cfg = model.config
    assert cfg.family == "tiny" and cfg.vocab_size == len(tok) and cfg.block_size == 4
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.mask_token_id, tok.eos_token_id, 0)
    assert 0.015 < model.layers[0].mlp.up_proj.weight.std().item() < 0.025

    same, other = load_model(write_tiny_checkpoint(tmp_path / "b", seed=3)), load_model(
        write_tiny_checkpoint(tmp_path / "c", seed=4))
    assert torch.equal(same.embed_tokens.weight, model.embed_tokens.weight)
    assert not torch.equal(other.embed_tokens.weight, model.embed_tokens.weight)

    ids = torch.tensor([tok("1+2=")["input_ids"]])
    logits = model(ids, torch.arange(ids.shape[1])[None])
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()
