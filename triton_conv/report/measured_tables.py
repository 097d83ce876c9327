"""The measured section's tables, each from the records of one GPU's runs: speedups over cuDNN,
knees, S(N), batching, throughput against N, training memory and gradient accumulation, and the
cells that may have read the L2."""

from __future__ import annotations

from collections import defaultdict

from .markdown import pass_label, table

KNEE_FRACTION = 0.9  # measured knee: the smallest N within 10% of the best per-image throughput
IMPLS = ("triton-conv", "cudnn", "inductor")


def _key(r: dict) -> tuple:
    return (r.get("layer_set"), r.get("layer"), pass_label(r), r.get("dtype"), r.get("layout"))


def _by_impl(records, kind="pass") -> dict:
    """{(layer_set, layer, pass, dtype, layout): {N: {impl: record}}}"""
    grouped: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("kind") == kind:
            grouped[_key(r)][r["N"]][r["implementation"]] = r
    return grouped


def _ratio(a, b):
    return a / b if a and b else None


def _alike(a: dict, b: dict) -> tuple:
    """The times of two records measured alike: their `seconds` where one timer took both (a
    campaign's device time by graph replay; bench/'s rounds); their eager times where a failed
    capture left one of them on the synchronised wall clock, which holds the host's launch cost that
    a replay leaves out (tens of µs: at N=1 several times the kernel); None where either lacks one."""
    if a.get("timer") == b.get("timer"):
        return a.get("seconds"), b.get("seconds")
    return a.get("eager_seconds"), b.get("eager_seconds")


def _alike_ratio(a: dict, b: dict):
    return _ratio(*_alike(a, b))


def speedup_table(records) -> str:
    """t_cuDNN / t_triton-conv per (layer, pass, dtype, layout) row and N column; > 1: triton-conv faster."""
    grouped = _by_impl(records)
    batches = sorted({n for by_n in grouped.values() for n in by_n})
    rows = []
    for key, by_n in grouped.items():
        cells = [_alike_ratio(by_n.get(n, {}).get("cudnn", {}), by_n.get(n, {}).get("triton-conv", {}))
                 for n in batches]  # fmt: skip
        if any(c is not None for c in cells):
            rows.append([key[0], key[1], key[2], key[3], *cells])
    return table(["set", "layer", "pass", "dtype", *[f"N={n}" for n in batches]], rows)


def batching_table(records) -> str:
    """One batch of N against N launches of one image: measured S(N) = t(N one at a time) / t(batch),
    in the records' own time (a campaign's: device time, no launch cost), and in eager time (a
    Python caller's, each launch's host cost included) where the records have it."""
    pairs: dict = defaultdict(dict)
    for r in records:
        if r.get("kind") == "batching":
            pairs[(r["layer"], r["implementation"], r["dtype"], r["N"])][r["how"]] = r
    rows = []
    for (layer, impl, dtype, n), by_how in sorted(pairs.items()):
        batch, single = by_how.get("batch", {}), by_how.get("one-at-a-time", {})
        model = (batch or single).get("model_speedup")
        eager_single, eager_batch = single.get("eager_seconds"), batch.get("eager_seconds")
        rows.append([layer, impl, dtype, n, _ms(batch.get("seconds")), _ms(single.get("seconds")),
                     _alike_ratio(single, batch), _ms(eager_batch), _ms(eager_single),
                     _ratio(eager_single, eager_batch), model])  # fmt: skip
    headers = ["layer", "impl", "dtype", "N", "batch ms", "N x one image ms", "measured S(N)",
               "eager: batch ms", "eager: N x one ms", "eager S(N)", "model S(N)"]  # fmt: skip
    return table(headers, rows) if rows else ""


def l2_table(records) -> str:
    """Cells whose timed calls may have read the L2: a turn over their input sets read less than the
    L2 holds (l2_multiple < 1: small layers at small N, where timers.MAX_INPUT_SETS binds)."""
    cells = {
        (r.get("layer_set"), r.get("layer"), pass_label(r), r.get("dtype"), r["N"]): r["l2_multiple"]
        for r in records
        if r.get("l2_multiple") is not None and r["l2_multiple"] < 1
    }
    rows = [[*key, multiple] for key, multiple in sorted(cells.items(), key=lambda kv: str(kv[0]))]
    return table(["set", "layer", "pass", "dtype", "N", "turn / L2"], rows) if rows else ""


def _ms(seconds):
    return seconds * 1e3 if seconds else None


def throughput_tables(records) -> str:
    """One table per (set, pass, dtype, layout): times, TFLOP/s, fraction of peak, speedups, the model."""
    grouped = _by_impl(records)
    sections: dict = defaultdict(list)
    for (layer_set, layer, pass_name, dtype, layout), by_n in grouped.items():
        for n in sorted(by_n):
            impl = by_n[n]
            ours, cudnn, peer = (impl.get(i, {}) for i in IMPLS)
            any_record = ours or cudnn or peer
            model = any_record.get("model") or {}
            sections[(layer_set, pass_name, dtype, layout)].append([
                layer, n, *(_ms(r.get("seconds")) for r in (ours, cudnn, peer)), ours.get("tflops"),
                ours.get("fraction_of_peak"), _alike_ratio(cudnn, ours), _alike_ratio(cudnn, peer),
                model.get("tflops"),
                any_record.get("tiles"), any_record.get("waves"),
            ])  # fmt: skip
    headers = ["layer", "N", "triton-conv ms", "cuDNN ms", "Inductor ms", "triton-conv TFLOP/s", "of peak",
               "vs cuDNN", "Inductor vs cuDNN", "model TFLOP/s", "tiles", "waves"]  # fmt: skip
    parts = []
    for (layer_set, pass_name, dtype, layout), rows in sections.items():
        parts.append(f"##### {layer_set}, {pass_name}, {dtype}, {layout}\n\n{table(headers, rows, '.3g')}")
    return "\n\n".join(parts)


def knee_table(records, device: str) -> str:
    """Measured knee (smallest N within 10% of the best per-image throughput) against the model's."""
    rows = []
    for key, by_n in _by_impl(records).items():
        for impl in IMPLS:
            rates = {n: n / r[impl]["seconds"] for n, r in by_n.items() if impl in r}
            if len(rates) < 3:
                continue
            best = max(rates.values())
            knee = min(n for n, rate in rates.items() if rate >= KNEE_FRACTION * best)
            model = next(r[impl].get("model") or {} for r in by_n.values() if impl in r)
            rows.append([device, key[0], key[1], key[2], key[3], impl, f"{min(rates)}..{max(rates)}", knee,
                         model.get("knee")])  # fmt: skip
    headers = ["device", "set", "layer", "pass", "dtype", "impl", "N measured", "measured knee", "model knee"]
    return table(headers, rows) if rows else "(fewer than three batch sizes per layer: no knee)"


def speedup_curve_table(records) -> str:
    """S(N) = N·t(1)/t(N) from the pass benchmarks (forward passes: conv2d's fprop, a transposed
    convolution's forward), measured and as the model predicts it."""
    rows = []
    for key, by_n in _by_impl(records).items():
        if not key[2].startswith("fprop") or 1 not in by_n:
            continue
        for impl in IMPLS:
            one = by_n[1].get(impl)
            if not one:
                continue
            for n in sorted(by_n):
                r = by_n[n].get(impl)
                if r and n > 1:
                    model = _ratio(
                        n * (one.get("model") or {}).get("seconds", 0), (r.get("model") or {}).get("seconds")
                    )
                    single, batch = _alike(one, r)
                    measured = _ratio(n * single, batch) if single else None
                    rows.append([key[0], key[1], key[3], impl, n, measured, model])
    return table(["set", "layer", "dtype", "impl", "N", "measured S(N)", "model S(N)"], rows) if rows else ""


def training_tables(records) -> str:
    steps = sorted(
        (r for r in records if r.get("kind") == "training_step"),
        key=lambda r: (r["dtype"], r["implementation"], r["N"]),
    )
    rows = []
    for r in steps:
        model_s = (r.get("model") or {}).get("seconds")
        weights = _gb(2 * (r.get("model_weight_bytes") or 0))
        measured = [_ms(r["seconds"]), _ms(model_s), r["N"] / r["seconds"], _gb(r.get("peak_memory_bytes"))]
        rows.append(
            [
                r["implementation"],
                r["dtype"],
                r["N"],
                *measured,
                _gb(r.get("model_activation_bytes")),
                weights,
            ]
        )
    parts = []
    if rows:
        headers = ["impl", "dtype", "N", "step ms", "model step ms", "images/s", "peak GB",
                   "model activations GB", "model weights+grads GB"]  # fmt: skip
        parts.append(table(headers, rows))
    accumulation = [r for r in records if r.get("kind") == "grad_accumulation"]
    real = {(r["implementation"], r["dtype"]): r for r in accumulation if r["micro_batch"] == r["N"]}
    rows = []
    for r in sorted(accumulation, key=lambda r: (r["implementation"], -r["micro_batch"])):
        base = real.get((r["implementation"], r["dtype"]), {})
        rows.append([r["implementation"], r["dtype"], r["N"], r["micro_batch"], _ms(r["seconds"]),
                     _gb(r.get("peak_memory_bytes")), _ratio(r["seconds"], base.get("seconds")),
                     _ratio(r.get("peak_memory_bytes"), base.get("peak_memory_bytes"))])  # fmt: skip
    if rows:
        parts.append(table(["impl", "dtype", "images", "micro-batch", "ms per update", "peak GB",
                            "time vs one batch", "memory vs one batch"], rows))  # fmt: skip
    return "\n\n".join(parts)


def _gb(nbytes):
    return nbytes / 1e9 if nbytes else None
