"""The GPU table (nanogpt2/flops/hardware.py): right peaks, exact detection, helpful lookups.

The peaks are checked against an independent derivation: streaming multiprocessors x
boost clock x the dense tensor-core FLOPs one SM does per clock. A sparse figure (2x),
an FP16-accumulate figure on a GeForce card (2x), or a typo would fail it.
"""

from __future__ import annotations

import pytest

from nanogpt2.errors import UserError
from nanogpt2.flops.hardware import GPUS, detect_gpu, gpu_names, lookup_gpu

# (key, SMs, boost GHz, dense 16-bit FLOPs with FP32 accumulate per SM per clock). SM counts and
# boost clocks: NVIDIA's Ada, GA102, GA100 and Hopper whitepapers, T4/L4 datasheets and product
# pages. FLOPs per SM per clock (2 per multiply-add): GeForce Ampere and Ada 512 (1024 with FP16
# accumulate, NVIDIA's headline); A100 2048; Turing (T4) and data-centre Ada (L4) 1024; Hopper 4096.
SM_DERIVATION = [
    ("4070ti", 60, 2.61, 512),
    ("4070tisuper", 66, 2.61, 512),
    ("4080", 76, 2.505, 512),
    ("4090", 128, 2.52, 512),
    ("3090", 82, 1.695, 512),
    ("a100-40gb", 108, 1.41, 2048),
    ("a100-80gb", 108, 1.41, 2048),
    ("a100-80gb-pcie", 108, 1.41, 2048),
    ("h100-sxm", 132, 1.83, 4096),
    ("h100-pcie", 114, 1.62, 4096),
    ("h200", 132, 1.83, 4096),
    ("l4", 58, 2.04, 1024),
    ("t4", 40, 1.59, 1024),
]


def test_every_gpu_is_checked():
    """The derivation table covers every GPU in the table, so none escapes the peak check."""
    assert sorted(k for k, *_ in SM_DERIVATION) == sorted(gpu_names())


@pytest.mark.parametrize("key,sms,ghz,per_sm", SM_DERIVATION)
def test_training_peak_matches_sm_arithmetic(key, sms, ghz, per_sm):
    """Each GPU's 16-bit training peak (bf16, or fp16 without bf16) is SMs x clock x per-SM rate, to 0.5%."""
    spec = lookup_gpu(key)
    peak = spec.bf16_flops if spec.bf16_flops is not None else spec.fp16_flops
    assert peak == pytest.approx(sms * ghz * 1e9 * per_sm, rel=0.005)


@pytest.mark.parametrize("spec", GPUS, ids=lambda s: s.key)
def test_peak_columns_are_consistent(spec):
    """FP32 accumulate never beats FP16 accumulate; GeForce cards halve it; fp16 = bf16; fp32 uses TF32."""
    assert spec.fp16_flops <= spec.fp16_acc16_flops
    if spec.name.startswith("GeForce"):
        assert spec.fp16_acc16_flops == pytest.approx(2 * spec.fp16_flops, rel=0.002)
    if spec.bf16_flops is not None:
        assert spec.peak_flops("bfloat16") == spec.bf16_flops == spec.fp16_flops
    assert spec.peak_flops("float16") == spec.fp16_flops
    assert spec.peak_flops("float32") == (spec.tf32_flops or spec.fp32_flops) >= spec.fp32_flops
    assert spec.memory_bytes == int(spec.memory_gib * 2**30) > 0 and spec.bandwidth > 0


# (key, nominal GiB, ECC on by default). The driver keeps a few hundred MiB of every card, and
# ECC a further 1/16 of the GDDR6 data-centre parts; CUDA reports what is left.
NOMINAL_MEMORY = [
    ("4070ti", 12, False),
    ("4070tisuper", 16, False),
    ("4080", 16, False),
    ("4090", 24, False),
    ("3090", 24, False),
    ("a100-40gb", 40, False),
    ("a100-80gb", 80, False),
    ("a100-80gb-pcie", 80, False),
    ("h100-sxm", 80, False),
    ("h100-pcie", 80, False),
    ("h200", 141, False),
    ("l4", 24, True),
    ("t4", 16, True),
]


def test_every_gpu_has_a_nominal_memory():
    """The nominal-memory table covers every GPU, so none escapes the memory check."""
    assert sorted(k for k, *_ in NOMINAL_MEMORY) == sorted(gpu_names())


@pytest.mark.parametrize("key,nominal_gib,ecc", NOMINAL_MEMORY)
def test_memory_is_what_cuda_reports_not_the_label(key, nominal_gib, ecc):
    """memory_gib is the total CUDA reports: below the label by the driver's 0.25-1.2 GiB (and ECC's 1/16), no more."""
    usable = nominal_gib * (15 / 16 if ecc else 1)
    assert usable - 1.2 <= lookup_gpu(key).memory_gib <= usable - 0.25


@pytest.mark.parametrize(
    "device_name,key",
    [
        ("NVIDIA GeForce RTX 4070 Ti", "4070ti"),
        ("NVIDIA GeForce RTX 4070 Ti SUPER", "4070tisuper"),
        ("NVIDIA GeForce RTX 4080", "4080"),
        ("NVIDIA GeForce RTX 4090", "4090"),
        ("NVIDIA GeForce RTX 3090", "3090"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L4", "l4"),
        ("Tesla T4", "t4"),
    ],
)
def test_detects_cuda_device_names(device_name, key):
    """torch.cuda.get_device_name() strings of the listed GPUs are recognised."""
    spec = detect_gpu(device_name)
    assert spec is not None and spec.key == key


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "NVIDIA GeForce RTX 4080 SUPER",
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA GeForce RTX 4070",
        "NVIDIA H100 NVL",
        "NVIDIA H200 NVL",
        "NVIDIA GeForce RTX 5090",
        "NVIDIA RTX 6000 Ada Generation",
        "AMD Instinct MI300X",
        "",
    ],
)
def test_unknown_or_near_miss_devices_are_unknown(device_name):
    """A GPU not in the table, including near relatives of ones that are, is reported unknown (None), never a guess."""
    assert detect_gpu(device_name) is None


@pytest.mark.parametrize(
    "name,key",
    [
        ("4070ti", "4070ti"),
        ("RTX 4070 Ti", "4070ti"),
        ("rtx-4070-ti", "4070ti"),
        ("NVIDIA GeForce RTX 4070 Ti", "4070ti"),
        ("4070 Ti SUPER", "4070tisuper"),
        ("A100 80GB", "a100-80gb"),
        ("a100-80gb-pcie", "a100-80gb-pcie"),
        ("H100 SXM", "h100-sxm"),
        ("t4", "t4"),
        ("Tesla T4", "t4"),
    ],
)
def test_lookup_accepts_user_spellings(name, key):
    """lookup_gpu takes the CLI key, NVIDIA's product name, and common spellings of either."""
    assert lookup_gpu(name).key == key


@pytest.mark.parametrize(
    "name,suggested",
    [
        ("h100", ["h100-sxm", "h100-pcie"]),
        ("a100", ["a100-40gb", "a100-80gb"]),
        ("4070", ["4070ti", "4070tisuper"]),
        ("banana", []),
    ],
)
def test_lookup_refuses_unknown_and_ambiguous_names(name, suggested):
    """An unknown or ambiguous name is a UserError naming the candidates, every accepted name and --peak-tflops."""
    with pytest.raises(UserError) as err:
        lookup_gpu(name)
    message = str(err.value)
    assert "\n" not in message and "--peak-tflops" in message
    assert all(key in message for key in gpu_names())
    if suggested:
        assert "did you mean" in message and all(s in message.split("known GPUs")[0] for s in suggested)


def test_gpu_without_bf16_has_no_bf16_peak():
    """The T4 (Turing) has no bf16 tensor cores: its bf16 peak is None rather than some other rate."""
    t4 = lookup_gpu("t4")
    assert t4.bf16_flops is None and t4.peak_flops("bfloat16") is None and t4.peak_flops("float16") == 65e12
    with pytest.raises(UserError):
        t4.peak_flops("int8")
