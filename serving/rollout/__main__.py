"""`python -m serving.rollout`: see serving/rollout/__init__.py."""

import sys

from serving.rollout.cli import main

sys.exit(main())
