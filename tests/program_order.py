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
