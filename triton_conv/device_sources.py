"""Where each figure of devices.DEVICES comes from: one citation per device (datasheets, architecture
whitepapers, the CUDA programming guide's per-compute-capability limits), kept as DeviceSpec.source
and printed wherever a device's figures are used."""

GUIDE = "CUDA C++ Programming Guide, Technical Specifications per Compute Capability"

_V100 = (
    "NVIDIA Tesla V100 GPU datasheet (SXM2: Tensor 125 TFLOPS, FP32 15.7 TFLOPS, 16 or 32 GB HBM2 "
    "at 900 GB/s); NVIDIA Tesla V100 GPU Architecture whitepaper (80 SMs, 8 tensor cores per SM "
    "each 64 fp16 FMA per clock with fp32 accumulation; no bf16 or tf32); "
    f"{GUIDE} (CC 7.0: 96/96 KB shared, 64K registers, 2048 threads, 32 CTAs per SM)"
)
SOURCES = {
    "H200 SXM": (
        "NVIDIA H200 Tensor Core GPU datasheet (FP16/BF16 1,979 and TF32 989 TFLOPS with sparsity, "
        "halved for dense; FP32 67 TFLOPS; 141 GB HBM3e at 4.8 TB/s); NVIDIA H100 Tensor Core GPU "
        "Architecture whitepaper (GH100 SXM5: 132 SMs, dense 989.4/494.7/66.9 TFLOPS); "
        f"{GUIDE} (CC 9.0: 228/227 KB shared, 64K registers, 2048 threads, 32 CTAs per SM)"
    ),
    "H100 SXM": (
        "NVIDIA H100 Tensor Core GPU datasheet (SXM: 80 GB HBM3 at 3.35 TB/s); NVIDIA H100 Tensor Core "
        "GPU Architecture whitepaper (H100 SXM5: 132 SMs, dense FP16/BF16 989.4, TF32 494.7, "
        f"FP32 66.9 TFLOPS); {GUIDE} (CC 9.0)"
    ),
    "A100 SXM 80GB": (
        "NVIDIA A100 Tensor Core GPU datasheet (SXM 80GB: dense FP16/BF16 312, TF32 156, FP32 19.5 "
        "TFLOPS; 80 GB HBM2e at 2,039 GB/s); NVIDIA A100 Tensor Core GPU Architecture whitepaper "
        f"(108 SMs); {GUIDE} (CC 8.0: 164/163 KB shared, 64K registers, 2048 threads, 32 CTAs per SM)"
    ),
    "A100 SXM 40GB": (
        "NVIDIA A100 Tensor Core GPU datasheet (SXM 40GB: dense FP16/BF16 312, TF32 156, FP32 19.5 "
        "TFLOPS; 40 GB HBM2 at 1,555 GB/s); NVIDIA A100 Tensor Core GPU Architecture whitepaper "
        f"(108 SMs); {GUIDE} (CC 8.0: 164/163 KB shared, 64K registers, 2048 threads, 32 CTAs per SM)"
    ),
    "V100 SXM2 16GB": _V100,
    "V100 SXM2 32GB": _V100 + "; also the DGX-2's V100 32GB (SXM3), whose rates the DGX-2 "
    "datasheet gives as 2 PFLOPS tensor for 16 GPUs, 125 TFLOPS each",
    "T4": (
        "NVIDIA T4 Tensor Core GPU datasheet (FP16 mixed precision 65 TFLOPS, FP32 8.1 TFLOPS, "
        "16 GB GDDR6 at 320 GB/s); NVIDIA Turing GPU Architecture whitepaper (T4: 40 SMs; no bf16 or "
        f"tf32 tensor cores); {GUIDE} (CC 7.5: 64/64 KB shared, 64K registers, 1024 threads, "
        "16 CTAs per SM)"
    ),
    "GTX 1050": (
        "NVIDIA GeForce GTX 1050 specifications (640 CUDA cores = 5 SMs x 128, 1455 MHz boost: "
        "640 x 2 x 1.455 GHz = 1.8624 TFLOPS fp32; 2 GB GDDR5, 7 Gbps on 128 bits = 112 GB/s); NVIDIA "
        "Pascal GP104 whitepaper (no tensor cores); "
        f"{GUIDE} (CC 6.1: 96 KB shared per SM, 48 KB per block, 64K registers, 2048 threads, "
        "32 CTAs per SM) and its arithmetic-throughput table (CC 6.1: fp16 at 2 vs fp32 at 128 results "
        "per clock per SM, 1/64: the model uses the fp32 FMA rate)"
    ),
    "GTX 1080 Ti": (
        "NVIDIA GeForce GTX 1080 Ti specifications (3584 CUDA cores = 28 SMs x 128, 1582 MHz boost: "
        "3584 x 2 x 1.582 GHz = 11.339776 TFLOPS fp32; 11 GB GDDR5X, 11 Gbps on 352 bits = 484 GB/s); "
        "NVIDIA Pascal GP102 whitepaper (no tensor cores); "
        f"{GUIDE} (CC 6.1: 96 KB shared per SM, 48 KB per block, 64K registers, 2048 threads, "
        "32 CTAs per SM; fp16 arithmetic at 1/64 of fp32: the model uses the fp32 FMA rate)"
    ),
    "RTX 4090": (
        "NVIDIA Ada GPU Architecture whitepaper (RTX 4090: 128 SMs; dense FP16/BF16 tensor with FP32 "
        "accumulate 165.2, TF32 82.6, FP32 82.6 TFLOPS; 24 GB GDDR6X at 1,008 GB/s); "
        f"{GUIDE} (CC 8.9: 100/99 KB shared, 64K registers, 1536 threads, 24 CTAs per SM)"
    ),
}
