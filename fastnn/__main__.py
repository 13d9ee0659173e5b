"""``python -m fastnn``: the command line (see :mod:`fastnn.cli`)."""

from .cli import main

raise SystemExit(main())
