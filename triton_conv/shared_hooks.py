"""The hooks a converted module shares with the torch module it replaced.

`from_torch` shares the hook tables (a hook registered on either fires on both, and the handles a
caller holds still remove them). torch keeps two facts about those hooks outside the tables, on
each module: whether its backward hooks are full ones (`_is_full_backward_hook`, set by the first
`register_full_backward_hook` or `register_backward_hook`), and, in each public load_state_dict
pre-hook, a weak reference to the module the hook is handed. Both are made to follow the tables
here, also for hooks registered on the original after the conversion (a Grad-CAM hook on a layer
reference taken before `convert_model`).
"""

from __future__ import annotations

import weakref

from torch import nn

FULL_HOOK_FLAG = "_is_full_backward_hook"  # a torch module's attribute; ours is a property of that name
# Where a converted module keeps its own flag: under its own name, since Dynamo (torch 2.11) reads
# `module.__dict__.get(name)` as `getattr(module, name)`, which for the property's name recursed.
OWN_FLAG = "_triton_conv_is_full_backward_hook"
# A converted module's weak reference to its original (neither keeps the other alive), whose
# callback keeps the flag when the original goes; not copied by deepcopy or pickle (__getstate__).
FLAG_KEEPER = "_triton_conv_flag_keeper"


def share(new: nn.Module, original: nn.Module) -> None:
    """Record that `new` shares `original`'s hook tables, and hand it the pre-hooks already there.
    When the original goes, `new` keeps the flag it had then (a hook registered on a reference the
    caller then dropped, gone with it otherwise)."""
    attributes, converted = original.__dict__, weakref.ref(new)  # its attributes, not the module

    def keep_flag(_):  # called as the original goes; its attributes are still readable here
        module = converted()
        if module is not None and module.__dict__.get(OWN_FLAG) is None:
            module.__dict__[OWN_FLAG] = attributes.get(OWN_FLAG, attributes.get(FULL_HOOK_FLAG))

    # Held by `new` alone, so that whatever the original's attributes reach (a hook holding the
    # model) is collected with `new`; the callback and the attributes are dropped once it has run.
    new.__dict__[FLAG_KEEPER] = weakref.ref(original, keep_flag)
    point_load_hooks_at(new)


def original_of(module: nn.Module) -> nn.Module | None:
    # The converted module's own weak reference (not a table of them: Dynamo guards a lookup in a
    # WeakKeyDictionary on the index of its key, which the collector moves: IndexError, torch 2.13)
    reference = module.__dict__.get(FLAG_KEEPER)
    return reference() if reference is not None else None


def full_hook_flag(module: nn.Module):
    """The module's own flag, or, while it has none, the original's: a hook registered there after
    the conversion set only the original's."""
    own = module.__dict__.get(OWN_FLAG)
    original = original_of(module)
    if own is None and original is not None:
        return original._is_full_backward_hook
    return own


def set_full_hook_flag(module: nn.Module, value) -> None:
    """Set on both: torch's module reads only its own, and runs the shared table's hooks by it."""
    module.__dict__[OWN_FLAG] = value
    original = original_of(module)
    if original is not None:
        original._is_full_backward_hook = value


def point_load_hooks_at(new: nn.Module) -> None:
    """Hand `new` the shared table's public load_state_dict pre-hooks that hold the original (or a
    module that is gone: the original, or another conversion of it sharing the table): left as
    they are, they would hand the hook the replaced module, or fail once it is gone ("the hook of a
    dead Module", in load_state_dict, deepcopy and pickle). Replaced under the same key, so that the
    caller's handle still removes them."""
    original = original_of(new)
    hooks = new._load_state_dict_pre_hooks
    for key, hook in list(hooks.items()):
        module = getattr(hook, "module", None) if getattr(hook, "with_module", False) else None
        if not isinstance(module, weakref.ref):
            continue
        held = module()
        if held is None or (original is not None and held is original):
            hooks[key] = type(hook)(hook.hook, new)
