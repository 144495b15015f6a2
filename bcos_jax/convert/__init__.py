"""Import of the official PyTorch B-cos weights into bcos_jax models."""

from bcos_jax.convert.torch_state_dict import (
    StateDictMismatchError,
    expected_state_dict_shapes,
    from_torch_state_dict,
    key_map,
    to_torch_state_dict,
    unmapped_variables,
)

__all__ = ["StateDictMismatchError", "expected_state_dict_shapes", "from_torch_state_dict",
           "key_map", "to_torch_state_dict", "unmapped_variables"]
