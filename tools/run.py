#!/usr/bin/env python
"""Run the cbsflow pipeline (profile -> split -> train -> sample -> evaluate) from gin files.

    python tools/run.py --gin gin/quickstart.gin
    python tools/run.py --gin gin/quickstart.gin --bind 'train.adaptation = None' --run-dir runs/uniform
    python tools/run.py --list
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cbsflow.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
