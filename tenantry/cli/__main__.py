"""`python -m tenantry.cli`."""

import sys

from tenantry.cli import main

sys.exit(main())
