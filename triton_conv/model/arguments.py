"""The checks of the model's public arguments: each returns the value it accepts, or raises a
ValueError (a value out of range) or a TypeError (a value of the wrong type) that names the argument.

A count (a batch size, a layer's count) is an integer: a Python, NumPy or torch integer (anything
with __index__, as torch's sizes accept), never a bool or a float. A number of seconds or bytes is a
finite real number. A problem has at least one input channel (ConvProblem accepts C=0, as torch
does, but its reduction is empty and the model has no time for it) and, unless its batch is
replaced, at least one image.
"""

from __future__ import annotations

import math

from ..configs import KernelConfig
from ..memo import BoundedMemo, hashable
from ..problem import ConvProblem


def check_count(value, name: str, least: int = 1, most: int = 2**63 - 1) -> int:
    """`value` as an int, at least `least` and at most `most` (int64's largest, as torch's sizes:
    10**400 images reached the float arithmetic as an OverflowError)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = type(value).__index__(value)
    except (TypeError, AttributeError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if number < least:
        raise ValueError(f"{name} must be at least {least}, got {number}")
    if number > most:
        raise ValueError(f"{name} must be at most {most}, got {number}")
    return number


def check_finite(
    value, name: str, *, least: float | None = None, above: float | None = None, most: float | None = None
) -> float:
    """`value` as a float: finite, and >= least, > above and <= most when given."""
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor with no value (meta)
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    except OverflowError:  # an int past a float's range (10**400): not a finite number of anything
        raise ValueError(f"{name} must be a finite number, got an integer too large for a float") from None
    low = (least is None or number >= least) and (above is None or number > above)
    if not (math.isfinite(number) and low and (most is None or number <= most)):
        bound = ("" if least is None else f" >= {least:g}") + ("" if above is None else f" > {above:g}")
        bound += "" if most is None else f" and <= {most:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def check_flag(value, name: str) -> bool:
    """A yes or no: True or False (NumPy's bools too), never a string or a number that Python would
    read as true ('fp32' given where a flag stands, by position)."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")  # 2.x, 1.x
    if not (isinstance(value, bool) or numpy_bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_problem(problem, name: str = "problem", *, batch: bool = True) -> ConvProblem:
    """A ConvProblem with input channels, an output of at least one pixel and (batch=True) at least
    one image, its batch an int; with batch=False its batch is the caller's to replace. Returned in
    the form the ops run (ConvProblem.canonical: a stride past the padded input cut to its span, which
    a dgrad at stride 1000 otherwise counted as a million tiles)."""
    if not isinstance(problem, ConvProblem):
        raise TypeError(f"{name} must be a ConvProblem, got {problem!r}")
    # The kinds of the fields are part of the key: 64.0 == 64, and hashes alike. A problem with an
    # unhashable field (a list for a stride) is checked, not remembered.
    key = (problem, batch, tuple(_kind(value) for value in vars(problem).values()))
    if not hashable(key):
        return _checked_problem(problem, name, batch)
    return _CHECKED.get(key, lambda: _checked_problem(problem, name, batch))


# Problems already checked (a model call checks its problem in each of its parts; a config search
# predicts tens of configs of one problem): {(problem, batch flag, field kinds): checked problem}.
_CHECKED = BoundedMemo()


def _kind(value):
    return tuple(map(type, value)) if type(value) is tuple else type(value)


def _checked_problem(problem: ConvProblem, name: str, batch: bool) -> ConvProblem:
    problem = _rebuilt(problem, name, batch)
    if problem.in_channels < 1:
        raise ValueError(f"{name} has no input channels ({problem}): its reduction is empty, it has no time")
    if min(problem.height, problem.width, problem.out_height, problem.out_width) < 1:
        raise ValueError(
            f"{name} has a {problem.height}x{problem.width} input and a {problem.out_height}x"
            f"{problem.out_width} output: a convolution the ops refuse has no time"
        )
    problem = problem.canonical()
    if batch:
        n = check_count(problem.batch, f"{name}'s batch")
        problem = problem if type(problem.batch) is int else problem.with_batch(n)
    return problem


def _rebuilt(problem: ConvProblem, name: str, batch: bool) -> ConvProblem:
    """The problem through torch's checks of a convolution's shapes and arguments (ConvProblem's
    constructors make them; the dataclass itself takes any field): ints (NumPy's too, converted),
    a positive stride, dilation and groups that divide both channel counts, non-negative sizes. A
    batch the caller will replace (batch=False) is checked as 1."""
    try:
        groups = check_count(problem.groups, "groups")
        images = problem.batch if batch else 1
        rebuilt = ConvProblem.from_sides(
            (images, problem.in_channels, problem.height, problem.width),
            (problem.out_channels, problem.in_channels // groups, problem.kernel_h, problem.kernel_w),
            problem.stride, problem.pads, problem.dilation, groups,
        )  # fmt: skip
    except (TypeError, ValueError) as error:  # ConvTypeError and ConvArgumentError are both
        raise type(error)(f"{name}: {error}") from None
    return rebuilt if batch else rebuilt.with_batch(problem.batch)


def check_config(config, name: str = "config", *, optional: bool = True) -> KernelConfig | None:
    if not (isinstance(config, KernelConfig) or (optional and config is None)):
        raise TypeError(f"{name} must be a KernelConfig{' or None' if optional else ''}, got {config!r}")
    return config


def check_layers(layers, name: str = "layers") -> list[tuple[str, ConvProblem, int, bool]]:
    """(name, problem, count, transposed) of each layer of a non-empty layer set of (name, problem,
    count) (triton_conv.layers); each problem's batch is the caller's to set."""
    checked = []
    for index, layer in enumerate(layers):
        if not (isinstance(layer, tuple) and len(layer) == 3):  # a Layer, or a (name, problem, count)
            raise TypeError(f"{name}[{index}] must be a layer (name, problem, count), got {layer!r}")
        label, problem, count = layer
        problem = check_problem(problem, f"{name}: layer {label!r}", batch=False)
        count = check_count(count, f"{name}: layer {label!r}'s count")
        checked.append((label, problem, count, getattr(layer, "transposed", False)))
    if not checked:
        raise ValueError(f"{name} is empty: give at least one layer")
    return checked
