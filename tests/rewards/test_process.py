"""Chunking and placement of process rewards on hand-written step maps, and against a brute-force
reading of the rule on random ones."""
import random

import pytest

from rewards.process import chunk_ends, chunk_steps, get_process_fn, place_scores, prefixes, process_vector, rule_scores


def test_eos_inside_a_block():
    # Prompt of 4 (blocks aligned), B = 4: block 1 = tokens 0-3, block 2 = tokens 4-5 (EOS at 5; the
    # sampler also committed two tail tokens after EOS at steps 7, 8 — they are not in the step map).
    step_map = [2, 1, 4, 3, 6, 5]
    assert chunk_ends(6, 4) == [4, 6]
    assert chunk_steps(step_map, [4, 6], 4, 4) == [4, 6]  # block 1's last step; the response's last
    assert process_vector(step_map, 4, 4, False, 4, [0.5, -1.0]) == [0, 0, 0.5, 0, -1.0, 0]


def test_chunk_shorter_than_a_block():
    # Prompt of 2: block 0 holds response tokens 0-1, block 1 tokens 2-5. Chunks of 2 tokens.
    step_map = [1, 2, 4, 3, 5, 3]
    assert chunk_ends(6, 2) == [2, 4, 6]
    assert chunk_steps(step_map, [2, 4, 6], 4, 2) == [2, 5, 5]
    # chunks 1 and 2 end in the same block: their scores add on its last step (token 4)
    assert process_vector(step_map, 2, 4, False, 2, [0.25, 0.5, 1.0]) == [0, 0.25, 0, 0, 1.5, 0]


def test_response_shorter_than_one_chunk():
    assert chunk_ends(3, 8) == [3]
    assert process_vector([1, 3, 2], 5, 4, False, 8, [0.7]) == [0, 0.7, 0]
    assert chunk_ends(0, 8) == [] and process_vector([], 5, 4, False, 8, []) == []


def test_every_token_of_the_step_carries_the_score():
    # two tokens committed at each step: the step's mean reward is the chunk's score
    assert process_vector([1, 1, 2, 2], 0, 2, False, 2, [0.3, 0.9]) == [0.3, 0.3, 0.9, 0.9]


def test_full_attention_blocks_start_at_the_response():
    step_map = [2, 1, 3, 4]  # prompt of 3, B = 2
    assert process_vector(step_map, 3, 2, True, 2, [1.0, 2.0]) == [1.0, 0, 0, 2.0]  # block = tokens 0-1
    assert process_vector(step_map, 3, 2, False, 2, [1.0, 2.0]) == [0, 0, 1.0, 2.0]  # block = tokens 1-2


def brute_force(step_map, prompt_len, B, chunk, scores):
    """The rule read literally, one token at a time."""
    L = len(step_map)
    out = [0.0] * L
    n_chunks = -(-L // chunk)
    for k in range(n_chunks):
        last = min((k + 1) * chunk, L) - 1
        if k == n_chunks - 1:
            target = max(step_map)
        else:
            block = (prompt_len + last) // B
            target = max(step_map[j] for j in range(L) if (prompt_len + j) // B == block)
        for j in range(L):
            if step_map[j] == target:
                out[j] += scores[k]
    return out


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_on_random_step_maps(seed):
    rng = random.Random(seed)
    B, prompt_len, L, chunk = rng.choice([1, 2, 4, 8]), rng.randint(1, 9), rng.randint(1, 30), rng.randint(1, 10)
    step_map, step = [], 0
    for b in range((prompt_len + L - 1) // B + 1):  # each block: a permutation of fresh steps, some shared
        members = [j for j in range(L) if (prompt_len + j) // B == b]
        if not members:
            continue
        k = rng.randint(1, len(members))
        steps = sorted(rng.choice(range(step + 1, step + k + 1)) for _ in members)
        rng.shuffle(steps)
        step_map += steps
        step = max(steps)
    scores = [rng.uniform(-1, 1) for _ in chunk_ends(L, chunk)]
    got = process_vector(step_map, prompt_len, B, False, chunk, scores)
    assert got == pytest.approx(brute_force(step_map, prompt_len, B, chunk, scores))


def test_prefixes_cut_ids_not_text():
    seen = []
    def decode(ids):
        seen.append(list(ids))
        return "".join(chr(96 + i) for i in ids)
    assert prefixes(decode, [1, 2, 3, 4, 5], 2) == ["ab", "abcd", "abcde"]
    assert seen == [[1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5]]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_ends(4, 0)
    with pytest.raises(ValueError, match="2 scores for 1 chunks"):
        place_scores([1], [1], [0.1, 0.2])
    with pytest.raises(ValueError, match="'judge' or 'package.module:function'"):
        get_process_fn("arith")
    with pytest.raises(ValueError, match="cannot load"):
        get_process_fn("tasks.builtin.arith:nope")


def test_a_crashing_or_miscounting_rule_scores_zero_with_the_reason():
    scores, failures = rule_scores(lambda texts, row: 1 / 0, ["a", "ab"], {})
    assert scores == [0.0, 0.0] and failures[0].startswith("rule_error: ZeroDivisionError")
    scores, failures = rule_scores(lambda texts, row: [1.0], ["a", "ab"], {})
    assert scores == [0.0, 0.0] and "1 scores for 2 prefixes" in failures[0]
    assert rule_scores(lambda texts, row: [0.5, 1], ["a", "ab"], {}) == ([0.5, 1.0], [])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_rule_with_a_non_finite_score_fails_every_chunk(bad):
    scores, failures = rule_scores(lambda texts, row: [0.5, bad], ["a", "ab"], {})
    assert scores == [0.0, 0.0]
    assert failures == [f"rule_error: ValueError: returned a non-finite score: {bad}"] * 2


def test_a_rule_that_exits_fails_every_chunk():
    def exits(texts, row):
        raise SystemExit(1)
    assert rule_scores(exits, ["a"], {}) == ([0.0], ["rule_error: SystemExit: 1"])
