"""TraceRL with a value model: TraceRL's rows, token-wise advantages from the value recursions."""
from .common import Objective
from .tracerl import trace_rows

OBJECTIVE = Objective("tracerl_value", trace_rows, redraws_masks=False, uses_value=True)
