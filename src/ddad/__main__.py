"""`python -m ddad ...` (what `torchrun -m ddad train ...` runs): the same CLI as the `ddad` command."""
import sys

from .cli import main

sys.exit(main())
