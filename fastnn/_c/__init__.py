"""Home of the compiled C kernels (``_kernels``, built from kernels/ at install time).

When the build failed, ``BUILD_ERROR.txt`` here says why; see fastnn.backends.c_backend.
"""
