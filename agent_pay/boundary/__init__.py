"""What every server agent-pay ships checks before it trusts a byte from the network.

The content server (`agent-pay serve`), the facilitator service (`agent-pay facilitator`) and the
node (`agent-pay node`) all run on uvicorn through `agent_pay.serving.serve_app`, which applies a
`ServerLimits`:

- `limits.py`: the limits and their defaults, one object;
- `connections.py`: a request head must arrive whole, and not too large, within a deadline
  (uvicorn times out neither a silent new connection nor one trickling its headers);
- `body.py`: a request body is read up to a size and within a deadline, or refused (413, 408);
- `json_depth.py`: JSON nesting is bounded before a recursive parser sees it;
- `error_responses.py`: every `AgentPayError` a route raises is answered by one handler.
"""

from agent_pay.boundary.body import read_body
from agent_pay.boundary.json_depth import DEFAULT_MAX_DEPTH, JsonShapeError, check_json_depth
from agent_pay.boundary.limits import ServerLimits

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "JsonShapeError",
    "ServerLimits",
    "check_json_depth",
    "read_body",
]
