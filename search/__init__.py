"""Models, compression, size, training and the search over them (see README)."""

import logging

# Brevitas imports torch.utils.cpp_extension, which logs a warning about a missing CUDA runtime
# on every CPU-only machine: a line of noise before every command's own output or error.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
