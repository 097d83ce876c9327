"""Host launchers: one per pass. They allocate outputs, pick flags and launch. They take validated
arguments (triton_conv.functional and the ops' checks validate before anything launches) and check
only what is cheap and would otherwise launch wrongly (wgrad: dy's and x's shapes against the
problem, the bias gradient's buffer)."""
