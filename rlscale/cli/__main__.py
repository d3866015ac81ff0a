"""``python -m rlscale.cli``: the ``rlscale`` command."""

import sys

from rlscale.cli import main

sys.exit(main())
