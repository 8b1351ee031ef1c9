"""``python -m trio_realtime.testing``: the fake Realtime server in a process of its own."""

import sys

from ._process import main

if __name__ == "__main__":
    sys.exit(main())
