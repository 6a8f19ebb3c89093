"""Convert an original Chatterbox checkpoint to MLX: ``python convert.py --help``.

A thin wrapper; the logic lives in ``chatterbox_mlx/checkpoints/convert.py``."""

import sys

from chatterbox_mlx.checkpoints.convert import main

if __name__ == "__main__":
    sys.exit(main())
