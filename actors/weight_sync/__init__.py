"""Learner rank 0 → rollout workers weight transfer (docs/design.md §8.3), behind one small contract.

Every transport moves the same thing: the full weights laid out in flat byte buckets, already in
the receivers' dtype, plus a small index (name, dtype, shape, bucket, offset) — `buckets.py`.
One module per transport (`shared_memory`, `collective` for the gloo and NCCL broadcast groups,
`cuda_ipc`, `object_store`); `planner.py` names them and picks one per rollout worker from facts
the actors report; `registry.py` builds each transport's sender and receiver.

This package's `__init__` imports nothing: `actors/config.py` reads the transport names from
`planner.py` without pulling in torch.distributed or Ray.
"""
