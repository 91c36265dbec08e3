import sys

from agent_pay.cli import main

sys.exit(main())
