"""Where the kernels run and which fp32 precision they use: the same as cuDNN's convolution."""

import itertools

import torch

from triton_conv.runtime import fp32_uses_tf32

LEVELS = ("none", "tf32", "ieee")


def test_tf32_resolves_like_cudnn_conv_for_every_setting(tf32_restored):
    """torch resolves cuDNN conv's fp32 precision from the most specific of its three levels that is
    not 'none'. The legacy getter answers only where conv, RNN and the legacy flag agree, and then
    its answer is cuDNN's: every such setting must agree with ours, and so must the legacy setter's
    two states (which leave all levels 'none' for False)."""
    cudnn = torch.backends.cudnn
    compared = 0
    for generic, backend, op in itertools.product(LEVELS, LEVELS, LEVELS):
        torch.backends.fp32_precision = generic
        cudnn.fp32_precision = backend
        cudnn.conv.fp32_precision = cudnn.rnn.fp32_precision = op
        try:
            cudnn_conv = torch._C._get_cudnn_allow_tf32()
        except RuntimeError:  # conv and RNN agree, but not with the legacy flag: no answer to compare
            continue
        assert fp32_uses_tf32() == cudnn_conv, (generic, backend, op)
        compared += 1
    assert compared >= 9
    for allow in (False, True):
        cudnn.allow_tf32 = allow
        assert fp32_uses_tf32() == allow


def test_a_mixed_new_api_setting_never_raises(tf32_restored):
    """conv 'none', cuDNN 'tf32' and RNN 'ieee': the legacy getter raises, our choice still resolves."""
    cudnn = torch.backends.cudnn
    cudnn.conv.fp32_precision = "none"
    cudnn.fp32_precision = "tf32"
    cudnn.rnn.fp32_precision = "ieee"
    assert fp32_uses_tf32() is True
    cudnn.fp32_precision = "ieee"
    assert fp32_uses_tf32() is False
