"""``python -m chatterbox_mlx.generate``: the command line (``chatterbox_mlx.cli``)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
