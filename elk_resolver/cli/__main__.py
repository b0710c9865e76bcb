"""``python -m elk_resolver.cli``: the same as the ``elk-resolver`` command."""

import sys

from elk_resolver.cli.main import main

sys.exit(main())
