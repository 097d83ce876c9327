"""Host launchers: one per pass. They allocate outputs, pick flags and launch; they never validate
arguments (triton_conv.functional does that once, before anything launches)."""
