"""The value types every settings file is checked with: no unknown keys, numbers that are numbers."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)


def not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's `yes`/`true` where a number belongs is a mistake, not 1
        raise ValueError(f"expected a number, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(not_a_bool)]  # 5e-4 written without a dot is a string to PyYAML: parsed
Int = StrictInt
