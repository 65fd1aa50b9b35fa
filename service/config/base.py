"""What every config section shares: a frozen, strict model, and a secret reference."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class FrozenModel(BaseModel):
    """A config model: immutable, and an unknown key is an error naming its path."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(FrozenModel):
    """Where a secret comes from: an environment variable or a file. Never the value."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self
