"""Allow ``python -m bluegreen``."""

from bluegreen.cli import main

raise SystemExit(main())
