"""`python -m mi_server` is the same as the `mi-server` console script."""

from mi_server.cli import main

raise SystemExit(main())
