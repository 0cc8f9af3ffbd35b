"""`python -m artifacts_tasks <command>`: the same CLI as `cryptorun artifacts <command>`."""

import sys

from .cli import main

sys.exit(main())
