"""Supervised on the step's correct rollouts, with TraceRL's rows (their decoding order is the target)."""
from .common import Objective
from .tracerl import trace_rows

OBJECTIVE = Objective("sft_trace", trace_rows, redraws_masks=False, supervised_on="rollouts")
