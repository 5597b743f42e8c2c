"""`python -m telemetrypulse.simulator …`: the same as `telemetrypulse simulate …`."""

import sys

from telemetrypulse.simulator.command_line import main

sys.exit(main(sys.argv[1:]))
