"""``python -m service.cli``: the ``relaxtune`` command."""

import sys

from service.cli import main

sys.exit(main())
