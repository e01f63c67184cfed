"""`python -m lfsearch ...` (and `torchrun -m lfsearch ...`) runs the command-line interface."""

from lfsearch.cli import main

raise SystemExit(main())
