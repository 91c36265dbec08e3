"""`python -m agent_pay.bench`: the same as `agent-pay bench`."""

import sys

from agent_pay.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
