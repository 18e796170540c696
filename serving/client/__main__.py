"""`python -m serving.client`: see serving/client/__init__.py."""

import sys

from serving.client.cli import main

sys.exit(main())
