"""``python -m blocksparsity.checkpoint IN OUT --level L ...``: see ``blocksparsity.checkpoint._cli``."""

import sys

from blocksparsity.checkpoint._cli import main

if __name__ == "__main__":
    sys.exit(main())
