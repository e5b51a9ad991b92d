"""``python -m odeon_job`` runs the ``odeon`` command."""

from odeon_job.commands.cli import main

raise SystemExit(main())
