"""Custom-gradient kernels: ``translation_orbit`` (every cyclic shift of a dense layer by real-DFT
matmuls, and the MLP orbit mean) and ``im2col_conv`` (convolution as chunked matmuls)."""
