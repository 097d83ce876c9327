"""Triton kernels, one file per pass; shared @triton.jit helpers live in common.py.

Nothing here allocates or validates: the host launchers in triton_conv.launchers do that.
"""
