"""``--quantization``: the thinker's language model loaded quantized, through transformers' own
quantization configs (``from_pretrained(quantization_config=...)``).

========================  ===========================================  ==========================
``--quantization``        transformers config                          runs on
========================  ===========================================  ==========================
``torchao-int8``          ``TorchAoConfig(Int8WeightOnlyConfig())``    CPU and GPU (needs torchao)
``bnb-8bit``              ``BitsAndBytesConfig(load_in_8bit=True)``    CUDA GPUs (needs bitsandbytes)
``bnb-4bit``              ``BitsAndBytesConfig(load_in_4bit=True)``,   CUDA GPUs (needs bitsandbytes)
                          NF4, compute in the model's dtype
========================  ===========================================  ==========================

Only the language model's linear layers are quantized: the audio and vision encoders (their
features are what OmniZip's saliency and keep plan read, and what the prefix cache stores) and the
output head stay in the model's dtype (:data:`NOT_QUANTIZED`). The report gives the weight bytes
with and without quantization (:func:`weight_bytes`).
"""

from __future__ import annotations

from typing import Any

from ..errors import EnvironmentProblem, UsageError

QUANTIZATION_CHOICES = ("bnb-8bit", "bnb-4bit", "torchao-int8")
#: Modules left unquantized (the thinker's module names; the same in both families).
NOT_QUANTIZED = ["model.audio_tower", "model.visual", "lm_head"]


def check_choice(name: str | None) -> None:
    if name is not None and name not in QUANTIZATION_CHOICES:
        raise UsageError(f"--quantization must be one of {', '.join(QUANTIZATION_CHOICES)}, not {name!r}")


def quantization_config(name: str, dtype: Any, device: str) -> Any:
    """The transformers quantization config of ``name`` (``dtype``: the model's torch dtype;
    ``device``: where it loads). A missing package or GPU is one line."""
    from importlib.util import find_spec

    if name.startswith("bnb-"):
        if not device.startswith("cuda"):
            raise UsageError(f"--quantization {name} needs a CUDA GPU (bitsandbytes); on the CPU use torchao-int8")
        if find_spec("bitsandbytes") is None:
            raise EnvironmentProblem(f"--quantization {name} needs bitsandbytes, which is not installed",
                                     hint='pip install "omnizip[quantization]" (or: pip install bitsandbytes)')
        from transformers import BitsAndBytesConfig

        if name == "bnb-8bit":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(NOT_QUANTIZED))
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                  llm_int8_skip_modules=list(NOT_QUANTIZED))
    if find_spec("torchao") is None:
        raise EnvironmentProblem(f"--quantization {name} needs torchao, which is not installed",
                                 hint='pip install "omnizip[quantization]" (or: pip install torchao)')
    from transformers import TorchAoConfig
    from transformers.utils import is_torchao_available

    if not is_torchao_available():
        raise EnvironmentProblem(f"--quantization {name}: the installed torchao is too old for this transformers",
                                 hint="pip install -U torchao")
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(NOT_QUANTIZED))


def tensor_bytes(tensor: Any) -> int:
    """Bytes a tensor really holds: a quantized tensor subclass (torchao) counts its inner tensors
    (int8 data and scales), not the nominal dtype it reports."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel() * tensor.element_size())


def _is_quantized(tensor: Any) -> bool:
    return hasattr(type(tensor), "__tensor_flatten__") or type(tensor).__module__.startswith("bitsandbytes")


def nominal_bytes(tensor: Any, dtype: Any) -> int:
    """Bytes the tensor would take unquantized in ``dtype`` (its logical shape); a tensor that is not
    quantized counts as it is."""
    import math

    import torch

    if not _is_quantized(tensor):
        return tensor_bytes(tensor)
    state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: the packed data hides the shape
    shape = getattr(state, "shape", None)
    numel = math.prod(shape) if shape is not None else tensor.numel()
    return int(numel * torch.empty((), dtype=dtype).element_size())


def weight_bytes(model: Any, dtype: Any) -> tuple[int, int]:
    """``(held, unquantized)``: the bytes of the model's parameters and buffers as loaded, and as
    they would be without quantization."""
    held = unquantized = 0
    for tensor in (*model.parameters(), *model.buffers()):
        held += tensor_bytes(tensor)
        unquantized += nominal_bytes(tensor, dtype)
    return held, unquantized
