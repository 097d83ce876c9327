"""Where the tests run the kernels, what they may not leave behind, and how they prove the Triton
kernels did the work.

Two modes, chosen before triton_conv is imported (TRITON_INTERPRET is read when @triton.jit runs):
- "cpu": CPU tensors through Triton's interpreter (TRITON_INTERPRET=1). The default without a GPU.
- "cuda": the compiled kernels on the GPU, with torch's default device set to CUDA so every tensor a
  test makes lives there. The default where a GPU is present; tests marked `interpreter` (they run
  kernels on explicit CPU tensors) are skipped there.
TRITON_CONV_TEST_DEVICE=cpu|cuda overrides the choice; an explicit TRITON_INTERPRET=1 means cpu.

Under the interpreter every test of the session, bench/'s too, runs inside tests/bounds.py's
`addresses_checked()` (TRITON_CONV_CHECK_ADDRESSES=0 turns it off; =1 with compiled kernels is an
error; it costs about 5% of the suite on Triton 3.9, 1% on 3.6): a test fails if a kernel it
launches loads, stores or updates an unmasked lane outside the elements of that launch's tensors (in
this process, and in the child processes that run their script through `bounds.checked_script`).
And each launch runs its programs in a random order drawn from the test's seed, as a GPU may run
them, not in the interpreter's grid order (tests/program_order.py; TRITON_CONV_PROGRAM_ORDER=grid
keeps the grid order).
"""

import contextlib
import os
import sys
from importlib.metadata import version

import numpy
import pytest
import torch


def _test_device() -> str:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "cpu"
    chosen = os.environ.get("TRITON_CONV_TEST_DEVICE", "")
    if chosen not in ("", "cpu", "cuda"):
        raise pytest.UsageError(f"TRITON_CONV_TEST_DEVICE must be cpu or cuda, got {chosen!r}")
    if chosen == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("TRITON_CONV_TEST_DEVICE=cuda, but torch sees no CUDA device")
    return chosen or ("cuda" if torch.cuda.is_available() else "cpu")


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run the kernels with the installed packages, or None.

    Triton 3.6's interpreter keeps scalars as one-element arrays and converts them with int(), which
    numpy 2.4 stopped allowing: every loop with a runtime bound fails (Triton 3.7 fixed it)."""
    if _version(version("triton")) < (3, 7) and _version(numpy.__version__) >= (2, 4):
        return (
            f"Triton {version('triton')}'s interpreter needs numpy < 2.4 (found {numpy.__version__}); "
            "install numpy<2.4, or run the tests on a GPU (TRITON_CONV_TEST_DEVICE=cuda)"
        )
    return None


# Not `import triton` before this point: Triton 3.6 reads TRITON_INTERPRET when it is imported.
TEST_DEVICE = _test_device()
# `pytest --benchmark-only` on a GPU machine times the real kernels: no interpreter there either.
if TEST_DEVICE == "cpu" and not ("--benchmark-only" in sys.argv and torch.cuda.is_available()):
    os.environ.setdefault("TRITON_INTERPRET", "1")
_ASKED = os.environ.get("TRITON_CONV_CHECK_ADDRESSES")
# On by default wherever kernels are interpreted: a read whose lanes are never stored leaves every
# float64 comparison right and can still fault on a GPU.
CHECK_ADDRESSES = (
    os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") if _ASKED is None else _ASKED not in ("", "0")
)
_ORDER = os.environ.get("TRITON_CONV_PROGRAM_ORDER", "any")
if _ORDER not in ("any", "grid"):
    raise pytest.UsageError(f"TRITON_CONV_PROGRAM_ORDER must be any or grid, got {_ORDER!r}")
# A GPU runs a launch's programs in any order; the interpreter, unless told, in grid order.
SHUFFLE_PROGRAMS = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and _ORDER == "any"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from triton_conv.launchers.common import launch_counts  # noqa: E402

from . import program_order  # noqa: E402


def _drop_unread_overflow_checks() -> None:
    """Triton's interpreter follows every 32-bit integer add, sub and mul with its overflow check
    (the same op again in int64, two compares, an and) and hands the result to device_assert, which
    drops it unless the options' debug is on; the interpreter's options never turn it on (Triton 3.6
    to 3.9). So the check decides nothing and costs about half of each launch: switched off while
    debug is off. A wrapped offset still shows as it did (a wrong value, or a read outside a tensor
    in the NaN-poisoned storage of the contract tests, or a crash in the int64 tests' subprocesses)."""
    import dataclasses

    from triton.runtime import interpreter

    options = interpreter.interpreter_builder.options
    if not options.debug and options.sanitize_overflow:
        interpreter.interpreter_builder.options = dataclasses.replace(options, sanitize_overflow=False)


def interpreter_builtins(pkg) -> list:
    """(name, member) for each Triton builtin among `pkg`'s attributes, in name order: what Triton's
    interpreter lists with inspect.getmembers, without inspect's generality (tests/test_harness.py
    checks the two agree on every object the interpreter patches)."""
    import triton.language as tl

    members = ((name, getattr(pkg, name, None)) for name in dir(pkg))
    return [(name, member) for name, member in members if tl.core.is_builtin(member)]


def _list_builtins_quickly() -> None:
    """The interpreter patches triton.language again at every call of a @triton.jit helper (Triton
    3.6 to 3.9), listing each patched object's members with inspect.getmembers, which took about a
    quarter of an interpreted launch of these kernels (tests/test_specialisations.py and
    test_dgrad.py: 78 s, 55 s with the same listing made by `interpreter_builtins`). Replaced only
    where the installed Triton's `_patch_builtin` is the one this was written against."""
    import inspect

    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_builtin", None)
    try:
        body = inspect.getsource(original)
    except (OSError, TypeError):
        return
    if "inspect.getmembers(pkg)" not in body or "_patch_attr(pkg, name, member, builder, scope)" not in body:
        return

    def patch_builtin(pkg, builder, scope):
        for name, member in interpreter_builtins(pkg):
            interpreter._patch_attr(pkg, name, member, builder, scope)

    interpreter._patch_builtin = patch_builtin


if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    _drop_unread_overflow_checks()
    _list_builtins_quickly()

_TORCH_CONVOLUTIONS = {
    "convolution",
    "convolution_backward",
    "_convolution",
    "_convolution_mode",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "mkldnn_convolution",
    "_slow_conv2d_forward",
    "_slow_conv2d_backward",
    "slow_conv_transpose2d",
    "slow_conv_dilated2d",
    "_conv_depthwise2d",
    "thnn_conv2d",
    "_nnpack_spatial_convolution",
}


class NoTorchConvolution(TorchDispatchMode):
    """Fails any test in which torch's own convolution runs: the Triton kernels must do the work."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "aten" and func.overloadpacket.__name__ in _TORCH_CONVOLUTIONS:
            raise AssertionError(f"torch's {func} ran where triton-conv's kernels should have")
        return func(*args, **(kwargs or {}))


class TritonProof:
    """Counts triton-conv's kernel launches inside a `with` block, with torch's convolutions barred."""

    def __enter__(self):
        self._before = dict(launch_counts)
        self._mode = NoTorchConvolution()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self.launches = {k: v - self._before.get(k, 0) for k, v in launch_counts.items()}
        self.launches = {k: v for k, v in self.launches.items() if v}
        return False


@pytest.fixture
def triton_only():
    """`with triton_only() as proof: ...; assert proof.launches[...]`."""
    return TritonProof


@pytest.fixture
def fake_runner(monkeypatch):
    """tuning.pass_runner replaced by one that launches nothing: each callable it makes carries the
    config it stands for (`fn.config`), for timers that score configs instead of timing them."""
    from triton_conv import tuning

    def runner(problem, pass_name, tensors, config, channels_last):
        def fn():
            return None

        fn.config = config
        return fn

    monkeypatch.setattr(tuning, "pass_runner", runner)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A tuning cache folder of the test's own and a process with no choice remembered (before and
    after), for tests that tune: `pytestmark = pytest.mark.usefixtures("cache_dir")`."""
    from triton_conv import choices, tuning_cache

    folder = tmp_path / "cache"
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(folder))
    choices.forget_choices()
    yield folder
    choices.forget_choices()


@pytest.fixture
def pretend_gpu(tmp_path, monkeypatch, fake_runner):
    """select_config's GPU path on the CPU: a device named 'Pretend', a timer that scores configs
    without launching (the smallest tile wins), a fresh cache folder."""
    from triton_conv import choices, tuning, tuning_cache
    from triton_conv.devices import get_device

    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "1")  # on a GPU the suite's default is 0 (pytest_configure)
    monkeypatch.setattr(tuning, "device_identity", lambda device: ("Pretend", get_device("H200")))
    monkeypatch.setattr(tuning, "random_inputs", lambda *args: {})
    monkeypatch.setattr(tuning, "gpu_timer", lambda fn: fn.config.block_m * fn.config.block_n / 1e3)
    monkeypatch.setattr(tuning, "device_guard", lambda device: contextlib.nullcontext())  # no CUDA here
    choices.forget_choices()
    yield tmp_path / "cache"
    choices.forget_choices()


@pytest.fixture(autouse=True)
def _fresh_seed():
    # Fresh random data every run; the seed is printed on failure so that a case can be replayed
    # with TRITON_CONV_TEST_SEED=<seed> (every test of the run then draws from that seed).
    replay = os.environ.get("TRITON_CONV_TEST_SEED", "")
    seed = int(replay) if replay else int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    if SHUFFLE_PROGRAMS:
        program_order.reseed(seed)
    print(f"torch.manual_seed({seed})")
    yield seed


def pytest_configure(config):
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if CHECK_ADDRESSES and not interpreted:
        raise pytest.UsageError(
            "TRITON_CONV_CHECK_ADDRESSES=1 checks the addresses of Triton's interpreter, and this run "
            "uses compiled kernels: add TRITON_CONV_TEST_DEVICE=cpu"
        )
    if TEST_DEVICE == "cuda":
        torch.set_default_device("cuda")
        # A shape's first call on a GPU times every candidate config: the tests that prove a Triton
        # kernel ran by counting launches counted the tuning's too (1,315 where 2 were expected, on
        # the H200 on 2026-12-04), and the suite spent its time tuning. The default configs, as
        # under the interpreter; a test of tuning itself sets the variable.
        os.environ.setdefault("TRITON_CONV_AUTOTUNE", "0")
    elif interpreted and (reason := interpreter_problem()):
        pytest.exit(reason, returncode=pytest.ExitCode.USAGE_ERROR)
    if CHECK_ADDRESSES:  # a plugin, not this file's hooks: bench/'s items are checked too
        from .bounds import SuiteCheck

        config.pluginmanager.register(SuiteCheck(), "triton-conv-address-check")
    if SHUFFLE_PROGRAMS:
        order = contextlib.ExitStack()
        order.enter_context(program_order.programs_in_any_order())
        config.add_cleanup(order.close)


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE != "cuda":
        return
    skip = pytest.mark.skip(reason="needs Triton's interpreter on CPU tensors; this run uses the GPU")
    for item in items:
        if "interpreter" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    runner = "Triton's interpreter" if interpreted else "compiled kernels"
    if CHECK_ADDRESSES:
        runner += ", every load and store's address checked"
    return (
        f"triton-conv tests on {TEST_DEVICE} ({runner}); "
        f"torch {torch.__version__}, Triton {version('triton')}, numpy {numpy.__version__}"
    )


# --- settings a test may change, restored whatever happens ---------------------------------------


def _tf32_state() -> tuple:
    """cuDNN's TF32 settings, raw: the legacy flag and the new API's three levels (and RNN's)."""
    cudnn = torch.backends.cudnn
    conv, rnn = getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None)
    with contextlib.suppress(RuntimeError):  # the legacy getter raises once the new API set conv != rnn
        legacy = torch._C._get_cudnn_allow_tf32()
        return (
            legacy,
            getattr(torch.backends, "fp32_precision", None),
            getattr(cudnn, "fp32_precision", None),
            getattr(conv, "fp32_precision", None),
            getattr(rnn, "fp32_precision", None),
        )
    return ("unreadable",)


def _restore_tf32(state: tuple) -> None:
    legacy, generic, cudnn_all, conv, rnn = state
    torch._C._set_cudnn_allow_tf32(legacy)  # sets conv's and RNN's levels too: the raw ones follow
    cudnn = torch.backends.cudnn
    for holder, value in (
        (torch.backends, generic), (cudnn, cudnn_all),
        (getattr(cudnn, "conv", None), conv), (getattr(cudnn, "rnn", None), rnn),
    ):  # fmt: skip
        if value is not None:
            holder.fp32_precision = value


@contextlib.contextmanager
def cudnn_tf32(on: bool):
    """cuDNN's TF32 switched on or off (through the legacy flag, as most code does) for a block."""
    state = _tf32_state()
    try:
        torch.backends.cudnn.allow_tf32 = on
        yield
    finally:
        _restore_tf32(state)


@pytest.fixture
def set_tf32():
    """`set_tf32(on)` switches cuDNN's TF32 setting for the rest of the test; restored after.
    (pytest's monkeypatch cannot: torch's settings are class-level properties, which monkeypatch 9.2
    records as missing and then fails to delete, abandoning the rest of its undo.)"""
    with contextlib.ExitStack() as stack:
        yield lambda on: stack.enter_context(cudnn_tf32(on))


@pytest.fixture
def tf32_restored():
    """For a test that sets torch's TF32 precision settings itself: all of them restored after."""
    state = _tf32_state()
    try:
        yield
    finally:
        _restore_tf32(state)


def _launch_functions() -> dict:
    """Every module-level `launch` of the launchers: a test that swaps one for a recorder and leaves
    it would make every later test see kernels that never ran."""
    import importlib
    import pkgutil

    import triton_conv.launchers as launchers

    found = {}
    for info in pkgutil.iter_modules(launchers.__path__):
        module = importlib.import_module(f"{launchers.__name__}.{info.name}")
        if hasattr(module, "launch"):
            found[module] = module.launch
    return found


def _global_state() -> dict:
    return {
        "launchers": _launch_functions(),
        "cudnn TF32": _tf32_state(),
        "cudnn benchmark": torch.backends.cudnn.benchmark,
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
    }


@pytest.fixture(autouse=True)
def _no_leaked_state():
    """Fails a test that leaves process-wide state changed, after putting it back, so one test's
    teardown can never poison the tests after it."""
    before = _global_state()
    yield
    after = _global_state()
    leaked = [name for name in before if after[name] != before[name]]
    if not leaked:
        return
    for module, function in before["launchers"].items():
        module.launch = function
    if before["cudnn TF32"] != after["cudnn TF32"] and len(before["cudnn TF32"]) == 5:
        _restore_tf32(before["cudnn TF32"])
    torch.backends.cudnn.benchmark = before["cudnn benchmark"]
    torch.set_default_dtype(before["default dtype"])
    torch.set_grad_enabled(before["grad mode"])
    if before["TRITON_INTERPRET"] is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = before["TRITON_INTERPRET"]
    pytest.fail(f"the test left process-wide state changed (now restored): {', '.join(leaked)}")
