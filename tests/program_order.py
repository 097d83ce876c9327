"""Launches whose programs run in a random order under Triton's interpreter, as a GPU may run them.

The interpreter runs a launch's programs one after another in grid order (axis 0 outermost, axis 2
innermost; Triton 3.6 to 3.9). Every split-K caller puts its splits on axis 2, so the splits of one
tile always ran back to back and the last split was always the last to arrive: a kernel that reused
another tile's workspace slot or counter, or that reduced in the split with the highest index
instead of the one that arrived last, passed every test here and would fail on a GPU. Under
`programs_in_any_order` each launch runs its programs in a fresh random order (each program still
runs whole and once: what this cannot show is two programs interleaving, which only a GPU does).

The hook renumbers the program the interpreter's loop is about to run: `set_grid_dim` (called once
per launch, before its loop) draws a permutation of the grid, and `set_grid_idx` maps the loop's
k-th program to the permutation's k-th. tests/conftest.py turns it on for the whole suite under the
interpreter, drawing from each test's seed (`reseed`), so a failure replays with its printed seed.
"""

import contextlib

import numpy as np
from triton.runtime import interpreter

_rng = np.random.default_rng(0)
# The interpreter's own, taken before any hook: chosen_programs bypasses programs_in_any_order,
# which would draw a permutation of the whole (there: billions of programs) grid.
_SET_GRID_DIM = interpreter.InterpreterBuilder.set_grid_dim
_SET_GRID_IDX = interpreter.InterpreterBuilder.set_grid_idx


def reseed(seed: int) -> None:
    """The orders of the launches that follow, drawn from `seed`."""
    global _rng
    _rng = np.random.default_rng(seed)


@contextlib.contextmanager
def programs_in_any_order():
    builder = interpreter.InterpreterBuilder
    saved_dim, saved_idx = builder.set_grid_dim, builder.set_grid_idx
    orders = {}

    def set_grid_dim(self, nx, ny, nz):
        saved_dim(self, nx, ny, nz)
        orders[id(self)] = _rng.permutation(int(nx) * int(ny) * int(nz))

    def set_grid_idx(self, x, y, z):
        _, ny, nz = self.grid_dim
        order = orders.get(id(self))
        if order is None or len(order) != self.grid_dim[0] * ny * nz:
            return saved_idx(self, x, y, z)  # a caller other than a launch's loop: as it asked
        program = int(order[(x * ny + y) * nz + z])
        x, rest = divmod(program, ny * nz)
        return saved_idx(self, x, *divmod(rest, nz))

    builder.set_grid_dim, builder.set_grid_idx = set_grid_dim, set_grid_idx
    try:
        yield
    finally:
        builder.set_grid_dim, builder.set_grid_idx = saved_dim, saved_idx


def require_interpreter(name: str) -> None:
    """For hooks that patch Triton's interpreter (these, and tests/bounds.py's address check): with
    compiled kernels they would silently do nothing."""
    from triton_conv.runtime import interpreter_active

    if not interpreter_active():
        raise AssertionError(f"{name} works in Triton's interpreter only: mark the test `interpreter`")


@contextlib.contextmanager
def chosen_programs(grid: tuple[int, int, int], programs: list[tuple[int, int, int]]):
    """Launches made with the grid (len(programs), 1, 1) run `programs`, the (x, y, z) ids of
    `grid`, and `tl.num_programs` says `grid`: a few programs of a launch too large to run whole
    under the interpreter (past 2**31 programs) run as they would in it."""
    require_interpreter("chosen_programs")
    builder = interpreter.InterpreterBuilder
    saved_dim, saved_idx = builder.set_grid_dim, builder.set_grid_idx

    def set_grid_dim(self, nx, ny, nz):
        assert (nx, ny, nz) == (len(programs), 1, 1), "launch with a grid of (len(programs), 1, 1)"
        _SET_GRID_DIM(self, *grid)

    def set_grid_idx(self, x, y, z):
        return _SET_GRID_IDX(self, *programs[x])

    builder.set_grid_dim, builder.set_grid_idx = set_grid_dim, set_grid_idx
    try:
        yield
    finally:
        builder.set_grid_dim, builder.set_grid_idx = saved_dim, saved_idx
