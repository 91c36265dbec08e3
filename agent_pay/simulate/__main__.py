"""`python -m agent_pay.simulate`: the same as `agent-pay simulate`."""

import sys

from agent_pay.simulate.cli import main

if __name__ == "__main__":
    sys.exit(main())
