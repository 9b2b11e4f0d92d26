"""Weight sync cost per transport, learner rank 0 → N rollout workers, on a local Ray.

    python bench/weight_sync.py            # ~100M-parameter model, 2 rollout workers
    python bench/weight_sync.py --quick    # the 0.8M tiny model

Prints ONE JSON line: params, workers, bytes, and seconds per full sync (best of --repeats) for
the host transports shared_memory, collective (gloo), object_store (nccl and cuda_ipc need GPUs:
bench/gpu_check_weight_sync.py); disk_s = what the reference code does every step: the learner
actor writes the policy as safetensors (an HF export), then every rollout worker, concurrently in
its own process, builds a fresh model from it and reads every weight; memcpy_s = a warm in-process
copy of the same bytes (the floor). Each sync includes rank 0 streaming the full weights out of
its engine.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.configure import compose_config  # noqa: E402
from actors.start import start_run  # noqa: E402
from actors.weight_sync.planner import COLLECTIVE, OBJECT_STORE, SHARED_MEMORY  # noqa: E402
from actors.weight_sync.publisher import WeightPublisher  # noqa: E402
from bench.common import REPO, bench_parser, best_of, emit  # noqa: E402
from models.checkpoint import load_model  # noqa: E402
from models.tiny import write_tiny_checkpoint  # noqa: E402

HOST_TRANSPORTS = (SHARED_MEMORY, COLLECTIVE, OBJECT_STORE)  # the CPU ones; nccl / cuda_ipc: gpu_check_weight_sync.py
BIG = dict(hidden_size=768, intermediate_size=2048, num_layers=16, num_heads=12, num_kv_heads=4, head_dim=64)


def main() -> None:
    ap = bench_parser(__doc__, quick="tiny model instead of ~100M parameters", repeats=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bucket-mb", type=int, default=64)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-wsync-"))
    path = write_tiny_checkpoint(tmp / "model", seed=0, **({} if args.quick else BIG))
    cfg = compose_config([f"model.path={path}", f"trainer.run_dir={tmp / 'run'}", "task.train_size=8",
                          "warmup.steps=0", "trainer.eval_every=0", "trainer.logger=[]", "trainer.progress=false",
                          f"cluster.rollout.num_workers={args.workers}", "cluster.learner.num_workers=1",
                          "cluster.reward.num_workers=1", f"weight_sync.bucket_mb={args.bucket_mb}",
                          "ray.namespace=bench-weight-sync"])
    ray.init(num_cpus=args.workers + 4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    run = start_run(cfg)
    ranks, workers = run.learner.ranks, run.rollout.workers
    result: dict[str, float | int] = {"workers": args.workers}
    try:
        version = 0

        def through_disk() -> None:
            nonlocal version
            version += 1
            ray.get([a.export_hf.remote(str(tmp / "disk")) for a in ranks])
            ray.get([w.load_from_disk.remote(str(tmp / "disk"), version) for w in workers])

        for kind in HOST_TRANSPORTS:
            publisher = WeightPublisher(ranks, workers, forced=kind)

            def sync() -> None:
                nonlocal version
                version += 1
                publisher.publish(version)

            sync()  # warm-up: forms the gloo group, first-touch page faults
            result[f"{kind}_s"] = best_of(args.repeats, sync)
        through_disk()  # warm-up too: the same treatment as the transports
        result["disk_s"] = best_of(args.repeats, through_disk)
        model = load_model(path)
        result["params"] = sum(p.numel() for p in model.parameters())
        nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        result["bytes"] = nbytes
        src, dst = torch.empty(nbytes, dtype=torch.uint8).fill_(1), torch.empty(nbytes, dtype=torch.uint8)
        dst.copy_(src)
        result["memcpy_s"] = best_of(args.repeats, lambda: dst.copy_(src))
    finally:
        run.close()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ["params", "workers", "bytes", *(f"{kind}_s" for kind in HOST_TRANSPORTS), "disk_s", "memcpy_s"]
    emit({k: round(result[k], 4) if isinstance(result[k], float) else result[k] for k in keys})


if __name__ == "__main__":
    main()
