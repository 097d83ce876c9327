"""The model of tiles, waves, the roofline and memory (triton_conv.model, triton_conv.devices).

Every expected value is worked out by hand in the comments. The design card's reference config is
128x128 tiles, BK 64 (fp16), 4 stages, 8 warps: 4 x (128 + 128) x 64 x 2 bytes = 131,072 bytes of
shared memory, so one CTA per SM on an H200 (228 KiB = 233,472 bytes per SM, 1 KiB reserved per CTA).
The tests here give the model that config (or another) explicitly; test_model_choice.py tests the
config the model picks, and the terms.
"""

import ast

import pytest
import torch

from triton_conv.configs import KernelConfig
from triton_conv.devices import DEVICES, DeviceSpec, get_device, live_device, match_device_name
from triton_conv.layers import (
    Layer,
    TransposedLayer,
    quantization_probes,
    resnet50,
    resnet50_megapixel,
    unet_decoder,
)
from triton_conv.model import (
    CALL_FLOOR_S,
    NO_FLOOR,
    activation_bytes,
    activation_bytes_per_image,
    batching_knee,
    batching_speedup,
    compulsory_bytes,
    dtype_kind,
    max_batch_for_memory,
    network_cost,
    network_speedup,
    occupancy,
    predict,
    reference_config,
    registers_per_thread,
    smem_per_cta,
    tile_stats,
    weight_bytes,
    work_flops,
)
from triton_conv.problem import ConvProblem

H200 = get_device("H200 SXM")
GTX_1050 = get_device("GTX 1050")


def _layer(layers, name):
    return next(layer.problem for layer in layers if layer.name == name)


LAYER3 = _layer(resnet50(), "layer3.1.conv2")  # 3x3, 256 -> 256, 14x14, pad 1
LAYER1 = _layer(resnet50(), "layer1.0.conv2")  # 3x3, 64 -> 64, 56x56, pad 1
WAVE_PROBE = quantization_probes()[3].problem  # 3x3, 128 -> 128, 22x24, pad 1
BIG = reference_config("fprop", "fp16", H200)


def _stats(problem, batch, pass_name="fprop", config=BIG, device=H200, dtype="fp16"):
    return tile_stats(problem.with_batch(batch), pass_name, config, device, dtype)


# --- devices ----------------------------------------------------------------------------------------
def test_device_table():
    assert {
        "H200 SXM",
        "H100 SXM",
        "A100 SXM 80GB",
        "A100 SXM 40GB",
        "V100 SXM2 16GB",
        "V100 SXM2 32GB",
        "T4",
        "GTX 1050",
        "GTX 1080 Ti",
        "RTX 4090",
    } <= set(DEVICES)
    assert (DEVICES["H200 SXM"].sm_count, DEVICES["A100 SXM 80GB"].sm_count) == (132, 108)
    assert (DEVICES["T4"].sm_count, DEVICES["GTX 1050"].sm_count) == (40, 5)
    v100, a100, gtx = DEVICES["V100 SXM2 16GB"], DEVICES["A100 SXM 40GB"], DEVICES["GTX 1080 Ti"]
    assert (v100.sm_count, v100.compute_capability, v100.smem_per_block, v100.smem_reserved_per_cta) == (
        80, (7, 0), 96 * 1024, 0
    )  # fmt: skip
    assert (v100.peak_flops("fp16"), v100.peak_flops("fp32"), v100.mem_bandwidth) == (125e12, 15.7e12, 900e9)
    assert v100.peak_flops("bf16") == 15.7e12  # Volta has no bf16 tensor path
    assert DEVICES["V100 SXM2 32GB"].mem_bytes == 2 * v100.mem_bytes == 32 * 10**9
    # the 40 GB A100 is the 80 GB one with HBM2 at 1,555 GB/s instead of HBM2e at 2,039
    assert (a100.sm_count, a100.peak_flops("fp16"), a100.mem_bandwidth) == (108, 312e12, 1.555e12)
    # GTX 1080 Ti: 3584 lanes x 2 x 1.582 GHz; 11 Gbps x 352 bits / 8 = 484 GB/s
    assert gtx.peak_flops("fp16") == gtx.peak_flops("fp32") == pytest.approx(3584 * 2 * 1.582e9)
    assert (gtx.sm_count, gtx.mem_bandwidth, gtx.smem_per_block) == (28, 11e9 * 352 / 8, 48 * 1024)
    for spec in DEVICES.values():
        assert isinstance(spec, DeviceSpec)
        assert "Programming Guide" in spec.source
        assert "datasheet" in spec.source or "whitepaper" in spec.source or "specifications" in spec.source
        assert spec.smem_per_block <= spec.smem_per_sm
        assert spec.mem_bandwidth > 0 and spec.mem_bytes > 0 and spec.fp32_tflops > 0


def test_peak_rates():
    assert H200.peak_flops("fp16") == pytest.approx(989.4e12)
    assert H200.peak_flops("fp32") == pytest.approx(494.7e12)  # TF32, as cudnn.allow_tf32 defaults
    assert H200.peak_flops("fp32", allow_tf32=False) == pytest.approx(66.9e12)
    # Pascal has no tensor cores and runs fp16 at 1/64: the model uses the fp32 FMA rate,
    # 640 lanes x 2 x 1.455 GHz.
    assert GTX_1050.peak_flops("fp16") == GTX_1050.peak_flops("fp32") == pytest.approx(1.8624e12)
    assert get_device("T4").peak_flops("bf16") == pytest.approx(8.1e12)  # Turing: no bf16 tensor cores
    with pytest.raises(ValueError):
        H200.peak_flops("int8")


def test_get_device_is_case_insensitive_and_lists_names():
    assert get_device("h200 sxm") is H200
    assert get_device("H200") is H200
    assert get_device("a100-sxm-80gb") is DEVICES["A100 SXM 80GB"]
    assert get_device(H200) is H200
    assert get_device("V100") is DEVICES["V100 SXM2 16GB"]
    assert get_device("gtx-1080-ti") is get_device("1080 Ti") is DEVICES["GTX 1080 Ti"]
    # The form factor may be left out; another form factor is another part, refused.
    assert get_device("A100 40GB") is DEVICES["A100 SXM 40GB"]
    assert get_device("v100-32gb") is DEVICES["V100 SXM2 32GB"]
    for other_part in ("P100", "A100 PCIe 40GB", "H100 PCIe"):
        with pytest.raises(ValueError, match="H200 SXM.*GTX 1050"):
            get_device(other_part)


def test_match_device_name():
    assert match_device_name("NVIDIA H200") is H200
    assert match_device_name("NVIDIA H100 80GB HBM3") is DEVICES["H100 SXM"]
    assert match_device_name("NVIDIA A100-SXM4-80GB") is DEVICES["A100 SXM 80GB"]
    assert match_device_name("NVIDIA A100-SXM4-40GB") is DEVICES["A100 SXM 40GB"]
    assert match_device_name("Tesla V100-SXM2-16GB") is DEVICES["V100 SXM2 16GB"]
    assert match_device_name("Tesla V100-SXM2-32GB") is DEVICES["V100 SXM2 32GB"]
    assert match_device_name("NVIDIA GeForce GTX 1080 Ti") is DEVICES["GTX 1080 Ti"]
    assert match_device_name("NVIDIA GeForce GTX 1080") is None  # 20 SMs, not the Ti's 28
    assert match_device_name("Tesla T4") is DEVICES["T4"]
    assert match_device_name("NVIDIA GeForce GTX 1050") is GTX_1050
    assert match_device_name("NVIDIA GeForce RTX 4090") is DEVICES["RTX 4090"]
    assert match_device_name("NVIDIA T400") is None
    assert match_device_name("NVIDIA GeForce RTX 3090") is None


def test_live_device():
    spec = live_device()
    if not torch.cuda.is_available():
        assert spec is None
    else:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        assert spec.sm_count == props.multi_processor_count
        assert spec.mem_bytes == props.total_memory


@pytest.mark.parametrize("clocks", [True, False], ids=["clocks", "no clocks (CUDA 13)"])
def test_live_device_of_a_gpu_not_in_the_table_has_rates_above_zero(monkeypatch, clocks):
    """An unknown GPU's rates came from the clocks in its properties, which CUDA 13's torch does not
    report: an fp32 peak and a bandwidth of 0, and the model then divided by zero."""
    from types import SimpleNamespace

    props = SimpleNamespace(name="NVIDIA GeForce RTX 5090", multi_processor_count=170, major=12, minor=0,
                            total_memory=32 * 10**9)  # fmt: skip
    if clocks:
        props.clock_rate, props.memory_clock_rate, props.memory_bus_width = 2_400_000, 14_000_000, 512
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    spec = live_device()
    assert spec.sm_count == 170 and spec.fp32_tflops > 0 and spec.mem_bandwidth > 0
    if clocks:
        assert spec.fp32_tflops == pytest.approx(170 * 128 * 2 * 2.4e9 / 1e12)
        assert spec.mem_bandwidth == pytest.approx(14e9 * 2 * 512 / 8)
    problem = ConvProblem.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert predict(problem, "fprop", None, spec, "fp32").time_s > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("sm_count", 0), ("regs_per_sm", -1), ("max_ctas_per_sm", 2.0), ("mem_bytes", True),
     ("smem_reserved_per_cta", -1), ("fp32_tflops", 0.0), ("mem_bandwidth", float("nan")),
     ("bf16_tflops", float("inf")), ("fp16_tflops", 0)],
)  # fmt: skip
def test_a_hand_built_device_with_a_count_or_rate_the_model_cannot_divide_by_is_refused(field, value):
    """The model divides by the SM count, the rates and the bandwidth: a zero made infinite times far
    from the spec that caused them."""
    from dataclasses import replace

    with pytest.raises(ValueError, match=f"DeviceSpec {field} must be"):
        replace(H200, **{field: value})
    without_bf16 = replace(H200, bf16_tflops=None, smem_reserved_per_cta=0)  # both allowed
    assert without_bf16.peak_flops("bf16") == H200.fp32_tflops * 1e12


def test_dtype_kind():
    assert dtype_kind(torch.float16) == ("fp16", 2)
    assert dtype_kind(torch.bfloat16) == ("bf16", 2)
    assert dtype_kind(torch.float32) == ("fp32", 4)
    assert dtype_kind("half") == ("fp16", 2)
    assert dtype_kind(2) == ("fp16", 2)
    assert dtype_kind(4) == ("fp32", 4)
    for bad in (torch.int8, 3, "fp8"):
        with pytest.raises(ValueError):
            dtype_kind(bad)


# --- one CTA's resources ----------------------------------------------------------------------------
def test_occupancy_of_the_default_config_on_h200():
    assert KernelConfig(128, 128, 64, 8, 1, 8, 4) == BIG
    assert smem_per_cta(BIG, 2) == 4 * 256 * 64 * 2 == 131_072
    # registers on an H200 (wgmma, operands in shared memory): 128·128/256 = 64 (accumulator) + 48 =
    # 112 (sm_90 compiles 116 to 128); without a capability (mma.sync) the warps' fragments count:
    # warps 4x2, each 32x64, (32 + 64)·64·2/128 = 96, 64 + 96 + 48 = 208 (sm_80: 164 to 222)
    assert registers_per_thread(BIG, 2, capability=(9, 0)) == 112
    assert registers_per_thread(BIG, 2) == 208
    occ = occupancy(BIG, 2, H200)
    assert occ.by_smem == 233_472 // (131_072 + 1024) == 1
    assert occ.by_regs == 65_536 // (112 * 256) == 2
    assert occ.by_threads == 2048 // 256 == 8
    assert (occ.ctas_per_sm, occ.limited_by) == (1, "shared memory")


def test_occupancy_of_a_small_config_is_register_limited():
    config = KernelConfig(64, 64, 32, 8, 1, 4, 3)
    # H200, fp16: smem 3·128·32·2 = 24,576 (+1 KiB) -> 233,472 // 25,600 = 9; the dot is wgmma (4
    # warps, BM 64), operands in shared memory: registers 4096/128 = 32 + 48 = 80 -> 65,536 //
    # (80·128) = 6 (sm_90 compiles the 4-stage 64x64x32 to 64, which would give 8); threads 16
    occ = occupancy(config, 2, H200)
    assert (occ.by_smem, occ.by_regs, occ.by_threads) == (9, 6, 16)
    assert (occ.ctas_per_sm, occ.limited_by) == (6, "registers")
    assert _stats(LAYER3, 1, config=config).slots == 132 * 6
    # A100, fp16 (mma.sync, cp.async): 2 buffers, 2·128·32·2 = 16,384 (+1 KiB) -> 167,936 // 17,408
    # = 9; registers: warps 2x2, each 32x32, (32 + 32)·32·2/128 = 32 fragments, 32 + 32 + 48 = 112
    # (sm_80 compiles 94 to 120) -> 65,536 // (112·128) = 4
    occ = occupancy(config, 2, "A100")
    assert (occ.by_smem, occ.by_regs, occ.ctas_per_sm, occ.limited_by) == (9, 4, 4, "registers")


def test_shared_memory_is_the_buffers_tritons_pipeliner_allocates():
    config = KernelConfig(128, 128, 64, 8, 1, 8, 3)
    # one buffer: (128 + 128)·64·2 = 32,768 bytes in fp16. Hopper (wgmma): 3 buffers, 98,304 (the
    # sm_90 static report: 96 KiB); CC 8.x (cp.async + mma.sync): 2, 65,536 (compiled for sm_80
    # with Triton 3.6 and 3.9: 65,536); no capability: num_stages, the design card's rule
    assert smem_per_cta(config, 2, (9, 0)) == 3 * 32_768 == 98_304
    assert smem_per_cta(config, 2, (8, 0)) == smem_per_cta(config, 2, (8, 9)) == 2 * 32_768
    assert smem_per_cta(config, 2) == 98_304
    # fp32 on an A100: 2·256·64·4 = 131,072 <= 163 KiB per block, so it launches (3 buffers,
    # 196,608, would not); 167,936 // (131,072 + 1,024) = 1
    assert occupancy(config, 4, "A100").ctas_per_sm == 1
    assert occupancy(config, 4, H200).smem_per_cta == 3 * 65_536
    # registers: 64x128x64 fp16, 8 warps on an H200 is wgmma: 8192/256 = 32 + 48 = 80 ->
    # 65,536 // (80·256) = 3; shared memory 3·192·64·2 = 73,728 (+1 KiB) -> 233,472 // 74,752 = 3:
    # 3 CTAs, as sm_90's compile (80 registers) gives. mma.sync: warps 2x4, each 32x32, fragments
    # (32 + 32)·64·2/128 = 64: 32 + 64 + 48 = 144 (sm_80 compiles 100 to 124). TF32 on an H200: the
    # CTA's operands among the threads, 192·64·4/(4·256) = 48: 32 + 48 + 48 = 128 (sm_90: 114)
    wide = KernelConfig(64, 128, 64, 8, 1, 8, 3)
    assert registers_per_thread(wide, 2, capability=(9, 0)) == 80
    assert registers_per_thread(wide, 2, capability=(8, 0)) == registers_per_thread(wide, 2) == 144
    assert registers_per_thread(wide, 4, capability=(9, 0)) == 32 + 48 + 48
    assert occupancy(wide, 2, H200).ctas_per_sm == 3


def test_a_config_too_big_for_the_device_is_refused_or_shrunk():
    with pytest.raises(ValueError, match="shared memory"):
        tile_stats(LAYER3, "fprop", BIG, "T4", "fp16")  # 128 KiB > T4's 64 KiB per block
    assert occupancy(BIG, 2, "T4").ctas_per_sm == 0
    # stages 4 -> 2 (64 KiB fits 64 KiB); RTX 4090 (CC 8.9: num_stages - 1 buffers) keeps 4 stages
    # (3 buffers, 96 KiB <= 99 KiB); GTX 1050 (48 KiB):
    # fp16 2 stages then BK 32 (2·256·32·2 = 32 KiB); fp32 2 stages then BK 16 (2·256·16·4 = 32 KiB)
    assert reference_config("fprop", "fp16", "T4") == KernelConfig(128, 128, 64, 8, 1, 8, 2)
    assert reference_config("fprop", "fp16", "RTX 4090").num_stages == 4
    assert reference_config("fprop", "fp16", GTX_1050) == KernelConfig(128, 128, 32, 8, 1, 8, 2)
    assert reference_config("fprop", "fp32", GTX_1050) == KernelConfig(128, 128, 16, 8, 1, 8, 2)
    assert reference_config("fprop", "fp32") == KernelConfig(128, 128, 32, 8, 1, 8, 4)
    assert reference_config("wgrad", "fp16", split_k=3).split_k == 3
    with pytest.raises(ValueError, match="pass_name"):
        reference_config("bprop")


# --- tiles and waves ----------------------------------------------------------------------------------
def test_worked_example_of_the_design_card():
    # ResNet-50's 3x3 layer at 14x14, C = K = 256, on an H200 with 128x128 tiles, 1 CTA per SM.
    # fprop M = N·196, GEMM N = 256 -> 2 column tiles.
    # N=1: ceil(196/128) = 2 -> 4 tiles; N=8: ceil(1568/128) = 13 -> 26; N=128: 25088/128 = 196 -> 392
    tiles = {n: _stats(LAYER3, n).tiles for n in (1, 8, 128)}
    assert tiles == {1: 4, 8: 26, 128: 392}
    one = _stats(LAYER3, 1)
    assert (one.ctas_per_sm, one.slots, one.waves) == (1, 132, 1)
    assert one.machine_fraction == 4 / 132  # "3% of the machine"
    assert round(100 * one.machine_fraction) == 3
    assert one.tile_efficiency == 196 * 256 / (4 * 128 * 128)  # 0.765625
    assert one.wave_efficiency == 4 / 132
    big = _stats(LAYER3, 128)
    assert (big.waves, big.tile_efficiency, big.wave_efficiency) == (3, 1.0, 392 / 396)
    assert (big.gemm_m, big.gemm_n, big.gemm_k) == (25_088, 256, 2304)


def test_batching_knee_of_the_worked_example():
    # tiles = 2·ceil(196N/128) >= 132 needs ceil(196N/128) >= 66, i.e. 196N > 65·128 = 8320: N >= 43
    # (N=42: 8232 rows -> 65 row tiles -> 130 tiles, two short of a wave)
    assert _stats(LAYER3, 42).tiles == 130
    assert _stats(LAYER3, 43).tiles == 132
    assert batching_knee(LAYER3, "fprop", BIG, H200) == 43
    assert batching_knee(LAYER3, "fprop", None, "H200") == 43


def test_groups_multiply_the_tiles():
    grouped = ConvProblem.from_shapes((8, 256, 14, 14), (256, 64, 3, 3), padding=1, groups=4)
    # per group M = 1568 (13 row tiles), N = 64 (1 column tile); 4 groups -> 52 tiles
    stats = tile_stats(grouped, "fprop", BIG, H200)
    assert stats.tiles == 13 * 1 * 4
    assert stats.tile_efficiency == 1568 * 64 * 4 / (52 * 128 * 128)


def test_gtx_1050_is_full_at_batch_1():
    # 56x56 3x3 64->64: M = 3136 -> ceil(3136/128) = 25 row tiles x 1 column tile = 25 tiles.
    # GTX 1050 fp16 config 128x128x32, 2 stages: 32 KiB shared (3 per SM); registers per thread
    # 64 (accumulator) + 48 (warps 4x2, each 32x64: (32 + 64)·32·2/128) + 48 = 160 (fp32's BK 16
    # gives the same), x 256 threads = 40,960 -> 65,536 // 40,960 = 1 CTA per SM (for sm_75,
    # Triton's fp32 kernel of this tile takes 254), 5 SMs -> 5 slots. 25 tiles >= 5: one image
    # fills the GPU (five waves).
    for dtype in ("fp16", "fp32"):
        config = reference_config("fprop", dtype, GTX_1050)
        stats = tile_stats(LAYER1, "fprop", config, GTX_1050, dtype)
        assert (stats.tiles, stats.ctas_per_sm, stats.limited_by) == (25, 1, "registers")
        assert (stats.slots, stats.waves) == (5, 5)
        assert batching_knee(LAYER1, "fprop", None, GTX_1050, dtype) == 1
    # N=8: 196 tiles, 40 waves. Compute-bound both times, so without launch overhead t ∝ waves
    # and S(8) = 8·5/40 = 1.0: every wave of one image is already full, a batch buys nothing
    # but the launch overhead (the seed's "N x the time").
    reference = reference_config("fprop", "fp16", GTX_1050)
    s8 = batching_speedup(LAYER1, "fprop", 8, reference, GTX_1050, terms=NO_FLOOR)
    assert s8 == pytest.approx(1.0, rel=1e-12)
    assert 1.0 < batching_speedup(LAYER1, "fprop", 8, reference, GTX_1050) < 1.02
    # while the H200 needs N = 6 to fill its 132 slots with this layer: ceil(24.5 N) tiles,
    # 123 at N=5, 147 at N=6
    assert batching_knee(LAYER1, "fprop", None, H200) == 6


def test_h200_per_image_time_steps_at_multiples_of_the_slots():
    # The wave probe: 528 rows per image -> tiles(N) = ceil(4.125 N) (one column tile, K = 128).
    # N=32: 132 tiles = one full wave; N=33: 137, N=34: 141 -> a second wave for 5 or 9 tiles.
    assert [_stats(WAVE_PROBE, n).tiles for n in (32, 33, 34)] == [132, 137, 141]
    assert [_stats(WAVE_PROBE, n).waves for n in (32, 33, 34, 64, 65)] == [1, 2, 2, 2, 3]
    t = {n: predict(WAVE_PROBE.with_batch(n), "fprop", BIG, H200) for n in range(1, 101)}
    assert all(p.bound == "compute" for p in t.values())
    per_image = {n: p.time_s / n for n, p in t.items()}
    assert per_image[34] > per_image[32] and per_image[33] > per_image[32]
    # compute-bound, so t = waves x (one wave) + launch: 34 images cost two waves, 32 one
    wave = 2 * 1152 * 128 * 128 * 132 / 989.4e12  # 2·K·BM·BN·W / peak, 5.0361 µs
    assert t[32].time_s == pytest.approx(wave + CALL_FLOOR_S, rel=1e-12)
    assert t[34].time_s == pytest.approx(2 * wave + CALL_FLOOR_S, rel=1e-12)
    assert t[64].time_s == pytest.approx(t[33].time_s, rel=1e-12)  # 264 tiles: still two waves
    # per-image time rises exactly where the tiles spill into a new wave:
    # 4.125 N > 132 k first at N = 33, 65 (268.125 > 264), 97 (400.125 > 396)
    rises = {n for n in range(2, 101) if per_image[n] > per_image[n - 1]}
    assert rises == {33, 65, 97}


def test_wgrad_of_a_few_channel_stem_tiles_the_padded_copy():
    stem = resnet50()[0].problem  # 7x7 stride 2, 3 -> 64 channels
    assert (stem.in_channels, stem.kernel_h, stem.kernel_w) == (3, 7, 7)
    # The launcher reads x from a copy with 4 channels per pixel (configs.tap_channels):
    # 4·49 = 196 columns, 4 column tiles of 64 (147 real columns would make 3), one row tile (K=64)
    small = KernelConfig(64, 64, 64, 8, 1, 4, 3)
    stats = _stats(stem, 8, "wgrad", small)
    assert (stats.gemm_n, stats.tiles) == (147, 4)
    # tile efficiency: 64·147 real outputs of 4·64·64 computed = 9,408 / 16,384
    assert stats.tile_efficiency == pytest.approx(9408 / 16384, rel=1e-12)
    # 128 wide: 2 column tiles either way, 64·147 / (2·64·128) = 9,408 / 16,384 again
    assert _stats(stem, 8, "wgrad", KernelConfig(64, 128, 64, 8, 1, 4, 3)).tiles == 2
    # 4 or more channels, or one tap: no copy, C/g·R·S columns (4·49 = 196 -> 4; 3 -> 1 tile)
    four = ConvProblem(8, 4, 224, 224, 64, 7, 7, (2, 2), 3, 3, 3, 3)
    assert _stats(four, 8, "wgrad", small).tiles == 4
    pointwise = ConvProblem(8, 3, 56, 56, 64, 1, 1)
    assert _stats(pointwise, 8, "wgrad", small).tiles == 1  # 3 columns, no copy


def test_the_models_wgrad_columns_are_the_launchers():
    """The model counts the columns the launcher tiles: both use configs.tap_channels."""
    from triton_conv.configs import wgrad_columns
    from triton_conv.launchers import wgrad as launcher

    cases = [(1, 1, 3, 3), (2, 1, 5, 20), (3, 1, 7, 7), (3, 3, 3, 3), (4, 1, 7, 7),
             (6, 2, 3, 3), (8, 1, 3, 3), (3, 1, 1, 1), (16, 1, 3, 3), (2, 2, 1, 3)]  # fmt: skip
    for c, groups, r, s in cases:
        problem = ConvProblem(2, c, 12, 12, 8, r, s, groups=groups)
        for size in (2, 4):  # fp16/bf16, fp32: the element sizes the model knows
            padded = launcher.tap_channels(problem, size)
            expected = (padded or problem.in_per_group) * r * s
            assert wgrad_columns(problem, size) == expected == wgrad_columns(problem), (problem, size)


def test_wgrad_tiles_do_not_grow_with_the_batch():
    # wgrad M = K = 256 (2 row tiles), N = C·R·S = 2304 (18 column tiles): 36 tiles at every N
    assert {_stats(LAYER3, n, "wgrad").tiles for n in (1, 8, 128, 1024)} == {36}
    assert _stats(LAYER3, 128, "wgrad").gemm_k == 128 * 196
    assert batching_knee(LAYER3, "wgrad", BIG, H200) is None  # 36 < 132 for ever
    # only split-K adds tiles: 3 splits -> 108 (82% of a wave), 4 -> 144 (a second wave: 144/264)
    split3 = KernelConfig(128, 128, 64, 8, 3, 8, 4)
    split4 = KernelConfig(128, 128, 64, 8, 4, 8, 4)
    assert {_stats(LAYER3, n, "wgrad", split3).tiles for n in (1, 8, 128)} == {108}
    stats4 = _stats(LAYER3, 8, "wgrad", split4)
    assert (stats4.tiles, stats4.waves, stats4.wave_efficiency) == (144, 2, 144 / 264)
    assert stats4.tile_efficiency == 1.0  # split tiles cover the same outputs
    assert batching_knee(LAYER3, "wgrad", split4, H200) == 1
    # the split-K workspace round trip: 2 x 4 bytes x 128·128 x 144 tiles
    assert predict(LAYER3, "wgrad", split4, H200).splitk_bytes == 2 * 4 * 128 * 128 * 144


def test_strided_dgrad_counts_its_stride_phases():
    stride2 = _layer(resnet50(), "layer2.0.conv2")  # 3x3 s2 pad 1, 128 -> 128, 56x56 -> 28x28
    # 4 phases of 28x28 = 784 rows: 4 x ceil(784/128) = 4 x 7 = 28 tiles (one launch, as the
    # launcher builds it), not ceil(3136/128) = 25
    stats = _stats(stride2, 1, "dgrad")
    assert (stats.tiles, stats.gemm_m) == (28, 3136)
    assert stats.tile_efficiency == 3136 * 128 / (28 * 128 * 128)  # 0.875
    # phases skip the zeros: phase 0 has 1 tap per axis, phase 1 has 2: 28·(1 + 2) = 84 = 28·3 per
    # axis, so the phases' multiply-adds are exactly fprop's
    assert work_flops(stride2, "dgrad") == stride2.flops("fprop") == 2 * 784 * 128 * 1152
    down = _layer(resnet50(), "layer2.0.downsample.0")  # 1x1 s2, 256 -> 512, 56 -> 28
    # 4 phases x 7 row tiles x ceil(256/128) = 2 column tiles; only phase (0, 0) has a tap
    assert _stats(down, 1, "dgrad").tiles == 56
    assert work_flops(down, "dgrad") == down.flops("fprop") == 2 * 784 * 256 * 512
    # stride 1: one phase, the plain GEMM of problem.gemm("dgrad")
    assert _stats(LAYER3, 8, "dgrad").tiles == _stats(LAYER3, 8, "fprop").tiles == 26
    assert work_flops(LAYER3, "dgrad") == LAYER3.flops("dgrad")


# --- the roofline ---------------------------------------------------------------------------------------
def test_prediction_of_the_worked_example_at_batch_1():
    p = predict(LAYER3, "fprop", BIG, "H200", torch.float16)
    assert (p.gemm_m, p.gemm_n, p.gemm_k, p.tiles, p.ctas_per_sm, p.slots, p.waves) == (
        196, 256, 2304, 4, 1, 132, 1
    )  # fmt: skip
    assert p.flops == 2 * 196 * 256 * 2304 == 231_211_008
    # x 256·196 + w 256·256·9 + y 256·196 = 690,176 elements x 2 bytes
    assert p.bytes == compulsory_bytes(LAYER3, "fprop", "fp16") == 1_380_352
    assert p.intensity == 231_211_008 / 1_380_352
    # flops / (peak · η_tile · η_wave) = 2·K·BM·BN · waves · W / peak = 10.07 µs, compute-bound
    compute = 2 * 2304 * 128 * 128 * 132 / 989.4e12
    assert p.compute_s == pytest.approx(compute, rel=1e-12)
    assert p.memory_s == pytest.approx(1_380_352 / 4.8e12, rel=1e-12)
    assert p.bound == "compute"
    assert p.time_s == pytest.approx(compute + 5e-6, rel=1e-12)
    assert p.tflops == pytest.approx(231_211_008 / (compute + 5e-6) / 1e12, rel=1e-12)
    assert 0.015 < p.efficiency < 0.016  # 15.3 TFLOP/s of 989: the cost of 4 tiles on 132 SMs


def test_pointwise_layer_is_memory_bound():
    pointwise = _layer(resnet50(), "layer1.0.conv3")  # 1x1 64 -> 256 at 56x56
    p = predict(pointwise, "fprop", BIG, H200)
    # bytes (200,704 + 16,384 + 802,816) x 2 = 2,039,808 -> 0.425 µs > 50 tiles' one wave 0.28 µs
    assert p.bytes == 2_039_808
    assert p.bound == "memory"
    assert p.time_s == pytest.approx(2_039_808 / 4.8e12 + 5e-6, rel=1e-12)


def test_megapixel_layers_fill_the_gpu_at_batch_1():
    layers = resnet50_megapixel()
    stem = layers[0].problem
    # 540·960 = 518,400 rows = 4050 x 128 exactly, K = 64 -> 1 column tile: 4050 tiles, 31 waves
    assert _stats(stem, 1).tiles == 4050
    assert _stats(layers[1].problem, 1).tiles == 1013  # 270·480 = 129,600 rows -> ceil(1012.5)
    assert all(_stats(layer.problem, 1).tiles >= 1000 for layer in layers[:6])
    # N=8: 32,400 tiles, ceil(245.45) = 246 waves. Compute-bound: S(8) = 8·31/246 without launch cost
    assert _stats(stem, 8).waves == 246
    assert batching_speedup(stem, "fprop", 8, BIG, H200, terms=NO_FLOOR) == pytest.approx(
        8 * 31 / 246, rel=1e-12
    )
    assert 1.0 < batching_speedup(stem, "fprop", 8, BIG, H200) < 1.25
    for layer, small in zip(layers[:6], resnet50()[:6], strict=True):
        assert batching_speedup(layer.problem, "fprop", 8, BIG, H200, terms=NO_FLOOR) < 1.04
        assert batching_speedup(layer.problem, "fprop", 8, BIG, H200) < 1.6
        if small.name != "conv1":
            assert batching_speedup(small.problem, "fprop", 8, BIG, H200) > 5  # the same layer at 224
    # the 224 stem is compute-bound already at N=1: each 7-tap row's 21 (s, c) elements fill 21 of
    # a BK=64 step (reduction efficiency 21/64), and 112·112 = 12,544 rows make 98 tiles: N=8 makes
    # 784, 6 waves
    small_stem = resnet50()[0].problem
    assert _stats(small_stem, 1).reduction_efficiency == 21 / 64
    assert batching_speedup(small_stem, "fprop", 8, BIG, H200, terms=NO_FLOOR) == pytest.approx(
        8 / 6, rel=1e-12
    )
    # the whole network's forward pass, each call in its chosen config: batching buys little at
    # 1920x1080 and several times at 224x224
    assert network_speedup(layers, "fprop", 8, H200, terms=NO_FLOOR) < 1.1
    assert network_speedup(resnet50(), "fprop", 8, H200, terms=NO_FLOOR) > 3


# --- memory -----------------------------------------------------------------------------------------------
def test_activation_memory_of_resnet50():
    layers = resnet50()
    # inference: the largest input + output of one conv: layer2.0.conv1 reads 256·56·56 = 802,816 and
    # writes 128·56·56 = 401,408 (the seed's "0.8 MB largest activation, 1.2 MB" at 1 byte each)
    assert activation_bytes_per_image(layers, "fp16", training=False) == 2 * 1_204_224
    # training: every conv output, by stage (elements):
    #   stem 64·112·112 = 802,816; layer1 3 x (200,704 + 200,704 + 802,816) + 802,816 = 4,415,488
    #   layer2 (401,408 + 100,352 + 401,408 + 401,408) + 3 x 602,112 = 3,110,912
    #   layer3 (200,704 + 50,176 + 200,704 + 200,704) + 5 x 301,056 = 2,157,568
    #   layer4 (100,352 + 25,088 + 100,352 + 100,352) + 2 x 150,528 = 627,200; total 11,113,984
    assert activation_bytes_per_image(layers, torch.float16) == 2 * 11_113_984
    assert activation_bytes_per_image(layers, torch.float32) == 4 * 11_113_984
    # 23,454,912 conv weights (25,557,032 parameters - fc 2,049,000 - BatchNorm 53,120)
    assert weight_bytes(layers, "fp16") == 2 * 23_454_912


def test_activation_memory_grows_linearly_with_the_batch():
    for layers in (resnet50(), resnet50_megapixel()):
        for training in (True, False):
            one = activation_bytes(layers, 1, "fp16", training)
            assert [activation_bytes(layers, n, "fp16", training) for n in (2, 7, 64)] == [
                2 * one, 7 * one, 64 * one
            ]  # fmt: skip


def test_megapixel_activations():
    layers = resnet50_megapixel()
    # the largest activation: 256·270·480 = 33,177,600 elements (the seed's "33.5 MB" at 1 byte);
    # with its 128-channel neighbour 49,766,400 (the seed's "33.5 MB plus half that = 50 MB")
    assert activation_bytes_per_image(layers, "fp16", training=False) == 2 * 49_766_400
    assert activation_bytes_per_image(layers, "fp16") == 2 * 460_093_440  # 41.4x the 224 figure


def test_max_batch_for_memory_respects_the_budget():
    layers = resnet50()
    budget = 141 * 10**9
    n = max_batch_for_memory(layers, budget, training=True, dtype="fp16")
    # (141e9 - 2 x 46,909,824 weights and gradients) // 22,227,968 = 140,906,180,352 // 22,227,968
    assert n == 6339
    fixed = 2 * weight_bytes(layers, "fp16")
    assert fixed + activation_bytes(layers, n, "fp16") <= budget < fixed + activation_bytes(layers, n + 1)
    assert max_batch_for_memory(layers, budget, training=False) == (budget - fixed // 2) // 2_408_448
    assert max_batch_for_memory(layers, budget, include_weights=False) == budget // 22_227_968
    # a 2 GB GTX 1050 cannot train ResNet-50 on one 1920x1080 image in fp32:
    # 2e9 - 2 x 4 x 23,454,912 = 1,812,360,704 < 4 x 460,093,440 = 1,840,373,760 per image;
    # in fp16 it holds (2e9 - 93,819,648) // 920,186,880 = 2
    mega = resnet50_megapixel()
    assert max_batch_for_memory(mega, GTX_1050.mem_bytes, dtype="fp32") == 0
    assert max_batch_for_memory(mega, GTX_1050.mem_bytes, dtype="fp16") == 2
    assert max_batch_for_memory(layers, 1000) == 0


def test_the_model_imports_no_kernel():
    from pathlib import Path

    import triton_conv.devices
    import triton_conv.layers
    import triton_conv.model

    model = sorted(Path(triton_conv.model.__file__).parent.glob("*.py"))
    own = {path.stem for path in model}
    for path in [*model, Path(triton_conv.layers.__file__), Path(triton_conv.devices.__file__)]:
        tree = ast.parse(path.read_text())
        names = set()
        for node in tree.body:  # module-level imports only (live_device imports torch when called;
            if isinstance(node, ast.Import):  # choice.candidate_configs imports the pruning rules)
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
        assert not {n for n in names if n.split(".")[0] in ("triton", "torch", "kernels", "launchers")}, path
        allowed = {"__future__", "math", "numbers", "re", "dataclasses", "typing", "collections.abc",
                   "functools", "configs", "split_sum", "memo", "devices", "device_sources", "problem",
                   *own}  # fmt: skip
        assert names <= allowed, (path, names)


def test_a_transposed_layer_is_modelled_by_its_views_passes():
    """A transposed layer's forward is predicted as its view's dgrad (stride phases: a 3x3 stride-2
    view has phases of 1, 2 and 4 taps, not fprop's 9), its training step as the view's dgrad, fprop
    and wgrad; its activations are the layers' outputs (the views' inputs)."""
    view = ConvProblem.from_transposed(
        (1, 512, 16, 16), (512, 256, 3, 3), stride=2, padding=1, output_padding=1
    )
    layers = [TransposedLayer("up", view, 2)]
    dgrad, fprop = (
        predict(view.with_batch(8), name, None, H200, "fp16").roofline_s for name in ("dgrad", "fprop")
    )
    assert dgrad < 0.8 * fprop  # 9 taps x 256 channels per output pixel in fprop, 2.25 on average in dgrad
    forward = network_cost(layers, "fprop", 8, H200, "fp16")
    assert forward.calls == 2 and forward.roofline_s == pytest.approx(2 * dgrad)
    assert network_cost([Layer(*layers[0])], "fprop", 8, H200, "fp16").roofline_s == pytest.approx(2 * fprop)
    step = network_cost(unet_decoder(), ("fprop", "dgrad", "wgrad"), 8, H200, "fp16", input_dgrad=True)
    views = sum(
        predict(layer.problem.with_batch(8), name, None, H200, "fp16").roofline_s
        for layer in unet_decoder()
        for name in ("dgrad", "fprop", "wgrad")
    )
    assert step.calls == 21 and step.roofline_s == pytest.approx(views)
    # U-Net's last up-convolution writes 64 x 256 x 256 elements per image (its view's input).
    last = unet_decoder()[3:4]
    assert activation_bytes_per_image(last, "fp16") == 2 * 64 * 256 * 256
    assert activation_bytes_per_image([Layer(*last[0])], "fp16") == 2 * 128 * 128 * 128
    assert weight_bytes(last, "fp16") == 2 * 128 * 64 * 2 * 2
