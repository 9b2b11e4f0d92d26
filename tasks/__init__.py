"""Task data: loaders for the reference JSON row format (loaders, readers, rows), prompt
templates (prompts), deterministic splits and the resumable prompt sampler (splits, sampler),
built-in generated tasks with their rewards (builtin/), and tasks by name (registry)."""
