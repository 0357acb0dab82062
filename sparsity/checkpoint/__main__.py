"""``python -m sparsity.checkpoint IN OUT --level L ...``: see ``sparsity.checkpoint._cli``."""

import sys

from sparsity.checkpoint._cli import main

if __name__ == "__main__":
    sys.exit(main())
