"""What a GPU can do at most: the peak numbers MFU is measured against, and detection.

MFU (model FLOPs utilization, Chowdhery et al. 2022, App. B) divides the FLOP/s
a training run achieves by the most the GPU could do. Which "most" matters, and
it is where popular calculators go wrong:

* **Dense, not sparse.** Data-centre datasheets headline "with sparsity" figures
  (2:4 structured sparsity, which dense training never uses); the dense rate is half.
* **FP32 accumulate.** Training sums its bf16/fp16 products in fp32 (cuBLAS does so
  for PyTorch's bf16 and fp16 matmuls). On GeForce Ampere and Ada cards that rate is
  *half* the "FP16 with FP16 accumulate" figure NVIDIA headlines; on the data-centre
  parts (A100, H100, H200, L4, T4) the two rates are equal.
* **Tensor cores, not CUDA cores.** The FP32 "shader TFLOPS" of a GeForce card is a
  different (and much smaller) number: it is what fp32 training without TF32 gets.
* **Per GPU.** An RTX 4070 Ti is not an A100: an unknown device is reported as
  unknown, never silently given some other card's peak.

Every rate below is NVIDIA's, with the document it comes from. FLOP/s are dense;
bandwidth is in bytes/s. Memory is what CUDA reports as the device's total
(torch.cuda.get_device_properties().total_memory) under Linux, in GiB: the nominal
size (GPU memory comes in binary units: a "12 GB" card has 12 GiB of DRAM) less what
the driver reserves, 0.3-0.9 GiB, and on the GDDR6 data-centre parts (L4, T4), which
ship with ECC on, less 1/16 more (NVIDIA CUDA C++ Best Practices Guide, "ECC"). Most
figures are [Reported]: measured in our runs, or read from PyTorch's out-of-memory
messages ("GPU 0 has a total capacity of X GiB"), which differ by ~0.05 GiB between
drivers; the rest are [Estimated] from nvidia-smi's total or a sibling card's reserve.
Windows (WDDM) reports the nominal size instead. Sources:

    [Ada]     NVIDIA Ada GPU Architecture whitepaper v2.1 (2023), App. A tables
              (RTX 4090, RTX 4080, RTX 4080 12 GB = later sold as the RTX 4070 Ti; L4).
    [GA102]   NVIDIA Ampere GA102 GPU Architecture whitepaper v2.0, App. A (RTX 3090).
    [A100]    NVIDIA A100 Tensor Core GPU datasheet (2021), and the Ampere GA100 whitepaper.
    [H100]    NVIDIA H100 Tensor Core GPU datasheet and Hopper whitepaper (dense = half
              of the "*with sparsity" figures: BF16 1,979 -> 989.4 TFLOP/s SXM, 1,513 -> 756 PCIe).
    [H200]    NVIDIA H200 Tensor Core GPU datasheet (2024): H100 SXM compute, 141 GB, 4.8 TB/s.
    [L4]      NVIDIA L4 datasheet (2023): BF16 242 TFLOP/s with sparsity -> 121 dense.
    [T4]      NVIDIA T4 datasheet: 65 TFLOP/s FP16/FP32 mixed precision, 8.1 FP32; no bf16.
    [Derived] RTX 4070 Ti SUPER (launched after [Ada]): 66 SMs x 2.61 GHz boost x 512
              dense FP16/BF16-with-FP32-accumulate FLOPs per SM per clock, the rate every
              GeForce Ada card in [Ada] has (RTX 4090: 128 x 2.52 GHz x 512 = 165.2 TFLOP/s).
    [Reported] CUDA's total memory: H100 SXM 79.18 GiB in our run (bench/results/gpu-h100-20261126);
              out-of-memory messages in GitHub issues: RTX 4070 Ti 11.70 (Kwai-Kolors/Kolors#11),
              RTX 4090 23.64-23.68 (ali-vilab/VGen#104, zai-org/CogVideo#36), RTX 3090 23.70
              (GaoLii/DSP#10), A100 40GB 39.50 (TianheWu/CoSeR#10), A100 80GB 79.25-79.35
              (levihsu/OOTDiffusion#235, OSU-NLP-Group/TableLlama#10), T4 14.75.
    [Estimated] 16 GB GeForce cards: 16 GiB less the 0.3 GiB the 12 and 24 GB ones lose. H100 PCIe:
              as the SXM. H200 and L4: nvidia-smi's totals (143,771 and 23,034 MiB; the latter in
              modal-labs/modal-client#2797) less the 0.5 GiB CUDA reports below nvidia-smi on the H100.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from nanogpt2.errors import UserError

T = 1e12  # TFLOP/s -> FLOP/s
GB = 1e9  # GB/s -> bytes/s (bandwidth is quoted in decimal units)


@dataclass(frozen=True)
class GPUSpec:
    """One GPU model's peak rates (dense FLOP/s), memory and bandwidth."""

    key: str
    """The CLI name, e.g. "4070ti"."""
    name: str
    """NVIDIA's product name, e.g. "GeForce RTX 4070 Ti"."""
    bf16_flops: float | None
    """Dense bf16 tensor-core peak with FP32 accumulate, FLOP/s: what MFU divides by. None: no bf16 (T4)."""
    fp16_flops: float
    """Dense fp16 tensor-core peak with FP32 accumulate (what PyTorch's fp16 matmuls use), FLOP/s."""
    fp16_acc16_flops: float
    """Dense fp16 with FP16 accumulate: NVIDIA's GeForce headline, not a training rate. FLOP/s."""
    tf32_flops: float | None
    """Dense TF32 tensor-core peak (fp32 training with TF32 enabled), FLOP/s. None: no TF32 (T4)."""
    fp32_flops: float
    """FP32 on the CUDA cores (no tensor cores), FLOP/s."""
    memory_gib: float
    """Memory CUDA reports as the card's total under Linux, GiB: a little below the nominal size (module docstring)."""
    bandwidth: float
    """Memory bandwidth, bytes/s."""
    source: str
    """Where the figures come from (see the module docstring)."""
    cuda_names: tuple[str, ...] = ()
    """torch.cuda.get_device_name() values that are this GPU, normalised by normalise_device_name()."""
    aliases: tuple[str, ...] = ()
    """Other names accepted by lookup_gpu (normalised by _lookup_key)."""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    def peak_flops(self, dtype: str = "bfloat16") -> float | None:
        """The dense peak a training run in `dtype` is measured against (None if the GPU lacks it).

        float32 runs use TF32 tensor cores (nanogpt2.common.runtime enables TF32 on CUDA), or the
        CUDA cores on a GPU without TF32."""
        if dtype == "bfloat16":
            return self.bf16_flops
        if dtype == "float16":
            return self.fp16_flops
        if dtype == "float32":
            return self.tf32_flops if self.tf32_flops is not None else self.fp32_flops
        raise UserError(f"dtype={dtype!r} is not one of bfloat16, float16, float32")


def _geforce(key, name, fp32, bf16, fp16_acc16, memory_gib, bandwidth_gbs, source, cuda_name, aliases=()) -> GPUSpec:
    """A GeForce Ampere/Ada card, in TFLOP/s and GB/s as NVIDIA's tables give them. FP16 with FP32
    accumulate runs at the bf16 rate, and TF32 at the FP32 CUDA-core rate ([Ada], [GA102] App. A)."""
    return GPUSpec(
        key=key,
        name=name,
        bf16_flops=bf16 * T,
        fp16_flops=bf16 * T,
        fp16_acc16_flops=fp16_acc16 * T,
        tf32_flops=fp32 * T,
        fp32_flops=fp32 * T,
        memory_gib=memory_gib,
        bandwidth=bandwidth_gbs * GB,
        source=source,
        cuda_names=(cuda_name,),
        aliases=aliases,
    )


GPUS: tuple[GPUSpec, ...] = (
    # [Ada] "RTX 4080 (12 GB)": FP32 40.1, BF16/FP16 (FP32 acc.) 80.2, FP16 (FP16 acc.) 160.4,
    # 12 GB GDDR6X at 21 Gbps x 192 bit = 504 GB/s. NVIDIA renamed it RTX 4070 Ti (same AD104, 60 SMs).
    _geforce("4070ti", "GeForce RTX 4070 Ti", 40.1, 80.2, 160.4, 11.70, 504.2, "[Ada]", "rtx 4070 ti"),
    # [Derived] 66 SMs x 2.61 GHz x 512 = 88.2 TFLOP/s; FP32 8448 cores x 2 x 2.61 GHz = 44.1;
    # 16 GB GDDR6X at 21 Gbps x 256 bit = 672 GB/s (NVIDIA product page).
    _geforce(
        "4070tisuper",
        "GeForce RTX 4070 Ti SUPER",
        44.1,
        88.2,
        176.4,
        15.7,
        672.0,
        "[Derived]",
        "rtx 4070 ti super",
        ("4070tis",),
    ),
    # [Ada] RTX 4080: FP32 48.7, BF16 (FP32 acc.) 97.5, FP16 (FP16 acc.) 194.9; 16 GB at 716.8 GB/s.
    _geforce("4080", "GeForce RTX 4080", 48.7, 97.5, 194.9, 15.7, 716.8, "[Ada]", "rtx 4080"),
    # [Ada] RTX 4090: FP32 82.6, BF16 (FP32 acc.) 165.2, FP16 (FP16 acc.) 330.3; 24 GB at 1,008 GB/s.
    _geforce("4090", "GeForce RTX 4090", 82.6, 165.2, 330.3, 23.64, 1008.0, "[Ada]", "rtx 4090"),
    # [GA102] RTX 3090: FP32 35.6, BF16 (FP32 acc.) 71, FP16 (FP16 acc.) 142; 24 GB at 936 GB/s.
    _geforce("3090", "GeForce RTX 3090", 35.6, 71.0, 142.0, 23.70, 936.0, "[GA102]", "rtx 3090"),
    # [A100] BF16/FP16 312 (624 with sparsity), TF32 156, FP32 19.5; 40 GB HBM2 at 1,555 GB/s (SXM4 and PCIe).
    GPUSpec(
        "a100-40gb",
        "A100 40GB",
        312 * T,
        312 * T,
        312 * T,
        156 * T,
        19.5 * T,
        39.50,
        1555 * GB,
        "[A100]",
        ("a100 sxm4 40gb", "a100 pcie 40gb"),
        ("a100sxm440gb", "a100pcie40gb"),
    ),
    # [A100] 80 GB SXM4: same compute, HBM2e at 2,039 GB/s.
    GPUSpec(
        "a100-80gb",
        "A100 80GB SXM",
        312 * T,
        312 * T,
        312 * T,
        156 * T,
        19.5 * T,
        79.25,
        2039 * GB,
        "[A100]",
        ("a100 sxm4 80gb",),
        ("a10080gbsxm", "a100sxm480gb"),
    ),
    # [A100] 80 GB PCIe: same compute, HBM2e at 1,935 GB/s.
    GPUSpec(
        "a100-80gb-pcie",
        "A100 80GB PCIe",
        312 * T,
        312 * T,
        312 * T,
        156 * T,
        19.5 * T,
        79.25,
        1935 * GB,
        "[A100]",
        ("a100 80gb pcie",),
        ("a100pcie80gb",),
    ),
    # [H100] SXM5: BF16/FP16 989.4 dense, TF32 494.7, FP32 66.9; 80 GB HBM3 at 3.35 TB/s.
    GPUSpec(
        "h100-sxm",
        "H100 SXM",
        989.4 * T,
        989.4 * T,
        989.4 * T,
        494.7 * T,
        66.9 * T,
        79.18,
        3350 * GB,
        "[H100]",
        ("h100 80gb hbm3", "h100 sxm5 80gb"),
        ("h100sxm5", "h10080gbhbm3"),
    ),
    # [H100] PCIe: BF16/FP16 756 dense, TF32 378, FP32 51.2; 80 GB HBM2e at 2.0 TB/s.
    GPUSpec(
        "h100-pcie",
        "H100 PCIe",
        756 * T,
        756 * T,
        756 * T,
        378 * T,
        51.2 * T,
        79.18,
        2000 * GB,
        "[H100]",
        ("h100 pcie",),
        (),
    ),
    # [H200] SXM: H100 SXM's compute, 141 GB HBM3e at 4.8 TB/s; CUDA ~139.9 GiB [Estimated].
    GPUSpec(
        "h200",
        "H200 SXM",
        989.4 * T,
        989.4 * T,
        989.4 * T,
        494.7 * T,
        66.9 * T,
        139.9,
        4800 * GB,
        "[H200]",
        ("h200",),
        ("h200sxm",),
    ),
    # [L4] BF16/FP16 121 dense (FP32 accumulate at full rate on this data-centre Ada part), TF32 60,
    # FP32 30.3; 24 GB GDDR6 at 300 GB/s: ECC (on by default) leaves 22.5 GiB, CUDA ~22.0 [Estimated].
    GPUSpec("l4", "L4", 121 * T, 121 * T, 121 * T, 60 * T, 30.3 * T, 22.0, 300 * GB, "[L4]", ("l4",), ()),
    # [T4] Turing: FP16 tensor cores (65 TFLOP/s mixed precision), no bf16, no TF32; FP32 8.1;
    # 16 GB GDDR6 at 320 GB/s, of which ECC (on by default) leaves 14.75 GiB usable (15,835,398,144 B).
    GPUSpec("t4", "T4", None, 65 * T, 65 * T, None, 8.1 * T, 14.75, 320 * GB, "[T4]", ("t4",), ("teslat4",)),
)

# Words that say nothing about which GPU it is.
_VENDOR_WORDS = {"nvidia", "geforce", "tesla"}


def normalise_device_name(name: str) -> str:
    """ "NVIDIA GeForce RTX 4070 Ti" -> "rtx 4070 ti"; "NVIDIA A100-SXM4-80GB" -> "a100 sxm4 80gb"."""
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    return " ".join(w for w in words if w not in _VENDOR_WORDS)


def detect_gpu(device_name: str) -> GPUSpec | None:
    """The spec for a CUDA device name (torch.cuda.get_device_name), or None if it is not in the table.

    Matching is exact after normalisation, so a near miss stays unknown: an "RTX 4070 Ti SUPER"
    is not an "RTX 4070 Ti", an "RTX 4090 D" or "RTX 4090 Laptop GPU" is not an "RTX 4090", an
    "H100 NVL" is neither H100 in the table. Unknown means MFU is not reported (or uses the
    peak the user gives), never another GPU's peak."""
    key = normalise_device_name(device_name)
    for spec in GPUS:
        if key in spec.cuda_names:
            return spec
    return None


def _lookup_key(name: str) -> str:
    """The user-facing form: lower case, letters and digits only, vendor and brand words dropped."""
    s = name.lower()
    for word in ("nvidia", "geforce", "tesla", "rtx"):
        s = s.replace(word, "")
    return re.sub(r"[^a-z0-9]", "", s)


def gpu_names() -> list[str]:
    """The names lookup_gpu accepts (one per GPU)."""
    return [spec.key for spec in GPUS]


def lookup_gpu(name: str) -> GPUSpec:
    """The spec for a user-given GPU name ("4070ti", "RTX 4070 Ti", "a100-80gb", "h100-sxm", ...).

    Raises UserError listing the accepted names, with the closest ones first."""
    key = _lookup_key(name)
    for spec in GPUS:
        if key in {_lookup_key(spec.key), _lookup_key(spec.name), *(_lookup_key(a) for a in spec.aliases)}:
            return spec
    prefixed = [spec.key for spec in GPUS if key and _lookup_key(spec.key).startswith(key)]
    close = prefixed or difflib.get_close_matches(name.lower(), gpu_names(), n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UserError(
        f"unknown GPU {name!r}{hint}; known GPUs: {', '.join(gpu_names())}. "
        "For any other GPU give its dense bf16 peak instead: --peak-tflops=N"
    )


def describe_peak(spec: GPUSpec, dtype: str = "bfloat16") -> str:
    """One line saying which peak is used and why it is not the headline figure."""
    peak = spec.peak_flops(dtype)
    if peak is None:
        return f"{spec.name} has no {dtype} tensor cores; use dtype float16"
    text = f"{spec.name}: {peak / T:,.1f} TFLOP/s dense {dtype}"
    if dtype in ("bfloat16", "float16"):
        text += " (FP32 accumulate)"
        if spec.fp16_acc16_flops > peak:
            text += f"; NVIDIA's {spec.fp16_acc16_flops / T:,.0f} TFLOP/s headline is FP16 accumulate"
    return text
