import chatterbox_mlx  # noqa: F401  (loads the optimized BLAS before mlx.core)
