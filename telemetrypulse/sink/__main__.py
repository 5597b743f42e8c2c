"""`python -m telemetrypulse.sink`: the same as `telemetrypulse sink`."""

import sys

from telemetrypulse.sink.service import main

sys.exit(main())
