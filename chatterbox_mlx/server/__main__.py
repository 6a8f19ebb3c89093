import sys

from chatterbox_mlx.server import main

sys.exit(main())
