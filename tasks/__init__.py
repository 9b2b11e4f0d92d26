"""Task data: loaders for the reference JSON row format (loaders, readers, schemas), prompt
templates (prompts), deterministic splits and the resumable prompt stream (splits, prompt_stream),
built-in generated tasks with their rewards (builtin/), and tasks by name (registry)."""
