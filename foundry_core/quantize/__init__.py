"""Weight-only quantization: Linear weights stored in 8 or 4 bits, computed in float.

Generating a token reads every weight once, so its speed is bound by memory: fewer bytes
per weight mean a smaller file, less RAM and, with a fused kernel, faster decoding. Each
QuantLinear rebuilds its float weight on the fly before an ordinary F.linear: the
storage and the error are real, the speed of a dedicated int4 kernel is not.

- int8: symmetric, one scale per output row. w ~ q * scale, q in [-127, 127].
- int4: asymmetric, one scale and one zero point per group of `group_size` consecutive
  inputs of a row. w ~ (q - zero) * scale, q in [0, 15], two values packed per byte.
  Small groups follow the local range of the weights (less error) at the cost of more
  scales (more bytes).

The package's modules: tensor.py quantizes one matrix; layers.py holds QuantLinear,
quantize_model, and the sizes and errors; files.py saves and loads a quantized model;
baselines.py holds the bf16 and PyTorch int8 references.
"""

from .baselines import cast_weights, torch_dynamic_int8
from .files import FORMAT, META, WEIGHTS, load_quantized, save_quantized
from .layers import (
    QuantLinear,
    fitting_group_sizes,
    layer_errors,
    linear_size_bytes,
    model_size_bytes,
    quantize_model,
)
from .tensor import (
    SCHEMES,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantization_error,
    quantize_tensor_int4,
    quantize_tensor_int8,
    unpack_int4,
)

__all__ = [
    "FORMAT",
    "META",
    "SCHEMES",
    "WEIGHTS",
    "QuantLinear",
    "cast_weights",
    "dequantize_int4",
    "dequantize_int8",
    "fitting_group_sizes",
    "layer_errors",
    "linear_size_bytes",
    "load_quantized",
    "model_size_bytes",
    "pack_int4",
    "quantization_error",
    "quantize_model",
    "quantize_tensor_int4",
    "quantize_tensor_int8",
    "save_quantized",
    "torch_dynamic_int8",
    "unpack_int4",
]
