"""`python -m npcd` runs the CLI."""

from npcd.cli import main

raise SystemExit(main())
