"""The test harness's changes to Triton's interpreter (tests/conftest.py) leave its answers alone."""

from __future__ import annotations

import inspect

import pytest
import triton.language as tl
from triton.runtime import interpreter

from .conftest import interpreter_builtins

# Every object whose builtins the interpreter patches (interpreter._patch_lang), Triton 3.6 to 3.9.
PATCHED = {
    "triton.language": tl,
    "triton.language.core": tl.core,
    "tensor": tl.tensor,
    "math": tl.math,
    "tensor_descriptor_base": tl.core.tensor_descriptor_base,
}


@pytest.mark.parametrize("name", list(PATCHED))
def test_the_quick_builtin_listing_is_inspects(name):
    pkg = PATCHED[name]
    want = [(n, member) for n, member in inspect.getmembers(pkg) if tl.core.is_builtin(member)]
    assert want, f"no builtins found in {name}: the comparison would prove nothing"
    assert interpreter_builtins(pkg) == want


@pytest.mark.interpreter
def test_the_quick_listing_is_installed_under_the_interpreter():
    """Under the interpreter the harness's listing is what patches the language (were it not, the
    suite would run a third slower, and this test would be the only sign)."""
    assert interpreter._patch_builtin.__module__ == "tests.conftest"
