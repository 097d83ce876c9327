"""bench/profile_step.py at the CPU's tiny scale: the profiled steps launch each pass's kernel once
per convolution, and both tables name the package's ops and its launch."""

from __future__ import annotations

import ast

from bench import profile_step


def test_the_profile_counts_one_launch_per_convolution_and_pass(tmp_path):
    out = tmp_path / "profile.txt"
    # The tiny network given outright: on a GPU the script's default is the whole ResNet-50.
    arguments = [*profile_step.TINY, "--rows", "60", "--out", str(out)]
    assert profile_step.main(arguments) == 0
    text = out.read_text()
    # Three stages of one bottleneck: the stem, 3 x 3 convolutions and 3 projections; the stem's
    # input needs no gradient, so one input-gradient launch fewer.
    header = next(line for line in text.splitlines() if "kernel launches in the cProfile'd steps" in line)
    launches = ast.literal_eval(header.split(": ", 1)[1])
    assert launches == {"dgrad_kernel": 12, "fprop_kernel": 13, "wgrad_kernel": 13}
    for op in ("triton_conv::conv2d ", "triton_conv::conv2d_input_grad", "triton_conv::conv2d_weight_grad"):
        assert op in text
    launch = [line for line in text.splitlines() if "launchers/common.py" in line and "(launch)" in line]
    assert launch and all(line.split()[0] == "38" for line in launch)  # called 13 + 12 + 13 times
