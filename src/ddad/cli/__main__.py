"""`python -m ddad.cli ...`: the same CLI as the `ddad` command."""
import sys

from . import main

sys.exit(main())
