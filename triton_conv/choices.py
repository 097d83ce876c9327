"""This process's choice of config per problem: what the passes launch.

`select_config` answers from the memo, else from tuning.autotune (the on-disk cache, else a
tuning), once per problem and thread-safely; `pin_config` makes a caller's own choice stick;
`forget_choices` clears the memo (tests; after changing TRITON_CONV_CACHE_DIR).

Under torch.use_deterministic_algorithms(True) or torch.backends.cudnn.deterministic
(runtime.deterministic_convolutions) the passes neither time nor read the cache: a timed
choice (and so the rounding of every sum) would depend on timing noise and on what some earlier
process wrote, as cuDNN's benchmark mode does. `untimed_config` then answers: a pin, else the
rules' default for the shape and GPU model, so two runs on one kind of GPU give the same bits.
"""

from __future__ import annotations

import os
import threading

import torch

from . import tuning
from .arguments import FLOAT_DTYPES, ConvArgumentError, ConvTypeError
from .configs import KernelConfig
from .problem import PASSES, ConvProblem
from .runtime import fp32_uses_tf32
from .tuning import Timer

_CHOSEN: dict[tuple, KernelConfig] = {}
# pin_config's choices, keyed on a memo key's first five fields (_pinned); they win everywhere
_PINNED: dict[tuple, KernelConfig] = {}


def select_config(
    problem: ConvProblem,
    pass_name: str,
    dtype: torch.dtype,
    channels_last: bool,
    device=None,
    *,
    timer: Timer | None = None,
) -> KernelConfig:
    """The config the autotuned passes launch with (memoised per problem in this process).

    One tuning per problem however many threads on one device miss it at once: the others wait for
    its result instead of timing the same configs beside it, each under the others' load (threads on
    different devices tune their own devices' problems, each on its own GPU). A pin_config made
    meanwhile wins over the tuning's result. A call of the same problem from inside its own tuning (a
    hook or a dispatch mode that runs a convolution while a config is timed) gets the untimed default
    instead of starting the tuning again. Known limit: two threads whose tunings each run the other's
    problem from such a hook wait for each other. A tuning that raises is not shared: each thread
    that waited for it then tunes (and may raise) on its own. tune_model and the `tune` command call
    tuning.autotune directly, outside these locks."""
    device = tuning._device(device)
    memo = _memo_key(problem, pass_name, dtype, channels_last, device, timer)
    config = _pinned(memo) or _CHOSEN.get(memo)
    if config is not None:
        return config
    in_progress = _IN_PROGRESS.__dict__.setdefault("memos", set())
    if memo in in_progress:
        live = tuning.device_identity(device)[1]
        return tuning.untimed_default(problem, pass_name, dtype, channels_last, live)
    with _tuning_lock(memo):
        config = _CHOSEN.get(memo)  # another thread's tuning, finished while this one waited
        if config is None:
            in_progress.add(memo)
            try:
                config = tuning.autotune(problem, pass_name, dtype, channels_last, device, timer=timer).best
            finally:
                in_progress.discard(memo)
            if _memo_key(problem, pass_name, dtype, channels_last, device, timer) == memo:
                config = _CHOSEN.setdefault(memo, config)  # not memoised if the TF32 setting changed
                with _LOCKS_LOCK:  # memoised: later callers never reach the lock (waiters hold it)
                    _TUNING_LOCKS.pop(memo, None)
    return _pinned(memo) or config  # a pin made while this thread tuned wins


_IN_PROGRESS = threading.local()  # .memos: the problems this thread is tuning now
_TUNING_LOCKS: dict[tuple, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _forget_tuning_locks() -> None:
    """In a forked child: the locks of tunings that other threads of the parent were running, which
    no thread of the child will ever release."""
    global _LOCKS_LOCK
    _LOCKS_LOCK = threading.Lock()
    _TUNING_LOCKS.clear()


os.register_at_fork(
    before=lambda: _LOCKS_LOCK.acquire(),
    after_in_parent=lambda: _LOCKS_LOCK.release(),
    after_in_child=_forget_tuning_locks,
)


def _tuning_lock(memo: tuple) -> threading.Lock:
    with _LOCKS_LOCK:
        return _TUNING_LOCKS.setdefault(memo, threading.Lock())


def _pinned(memo: tuple) -> KernelConfig | None:
    """The pin for a memo key's problem (its first five fields), if any; nothing hashed when no pin
    exists (the common case, on every pass's call)."""
    return _PINNED.get(memo[:5]) if _PINNED else None


def _memo_key(problem, pass_name, dtype, channels_last, device, timer=None) -> tuple:
    # fp32's TF32 setting changes the tuning key (a TF32 dot is another kernel), so the memo too.
    # Its first five fields are a pin's key: a pin holds for the problem whatever the TF32 setting
    # (which picks the kernel's precision, not the caller's tile) and timer. Outside a call the
    # setting is cuDNN's; inside, the call's own (IEEE for an NCHW depthwise convolution, or with
    # cuDNN disabled), so a pin keyed on it was missed by the very call it was made for.
    tf32 = dtype == torch.float32 and fp32_uses_tf32()
    device = tuning._device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():  # 'cuda' is 'cuda:0':
        device = torch.device("cuda", torch.cuda.current_device())  # one GPU, one memo
    return (problem, pass_name, dtype, bool(channels_last), str(device), timer, tf32)


def pin_config(problem, pass_name, dtype, channels_last, device, config: KernelConfig) -> None:
    """From now on in this process, the passes launch `config` for exactly this problem (its pass,
    dtype, layout flag and device: pass the tensors' own device, 'cuda:0', as the ops see it),
    whatever the cache holds for its tuning key: for a caller that timed its own candidates (the
    campaign) and runs its winner through the custom ops. Other problems with the same key are not
    affected; forget_choices() unpins. The problem is pinned in the form the ops run
    (ConvProblem.canonical: a stride past the padded input cut to its span). A pin the passes could
    never look up (another pass name, a dtype they do not run) or that is no KernelConfig is refused,
    not kept unused or left to fail in a later convolution."""
    _check_pin(problem, pass_name, dtype, config)
    _PINNED[_memo_key(problem.canonical(), pass_name, dtype, channels_last, device)[:5]] = config


def untimed_config(problem, pass_name, dtype, channels_last, device) -> KernelConfig:
    """What the passes launch in torch's deterministic mode: a pin_config's config, else the default
    for the shape and the live GPU's model (its SM count and architecture), never a timed one."""
    device = tuning._device(device)
    pinned = _pinned(_memo_key(problem, pass_name, dtype, channels_last, device))
    if pinned is not None:
        return pinned
    live = tuning.device_identity(device)[1]
    return tuning.untimed_default(problem, pass_name, dtype, channels_last, live)


def _check_pin(problem, pass_name, dtype, config) -> None:
    if not isinstance(problem, ConvProblem):
        raise ConvTypeError(f"problem must be a ConvProblem, got {type(problem).__name__}")
    if pass_name not in PASSES:
        raise ConvArgumentError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    if dtype not in FLOAT_DTYPES:
        raise ConvTypeError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if not isinstance(config, KernelConfig):
        raise ConvTypeError(f"config must be a KernelConfig, got {type(config).__name__}")


def remembered_config(problem, pass_name, dtype, channels_last, device) -> KernelConfig | None:
    """The config select_config already chose (or pin_config pinned) for this problem, if any."""
    memo = _memo_key(problem, pass_name, dtype, channels_last, device)
    return _pinned(memo) or _CHOSEN.get(memo)


def forget_choices() -> None:
    """Clear the in-process memo (tests; after changing TRITON_CONV_CACHE_DIR)."""
    from .tuning_cache import forget_open_caches

    _PINNED.clear()
    _CHOSEN.clear()  # the tuning locks stay: a tuning running now still holds its own
    forget_open_caches()
