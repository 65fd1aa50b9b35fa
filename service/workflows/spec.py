"""A workflow as the runner sees it: built once per config snapshot."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from service.config.workflows_model import WorkflowConfig

_ADAPTER: TypeAdapter[WorkflowConfig] = TypeAdapter(WorkflowConfig)


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A named workflow: its kind (``sequential``, ``parallel``, ``handoff``,
    ``supervisor``), its version (given, or a hash of the definition) and the definition
    itself (frozen), which a run stores so a resumed run keeps the shape it began with."""

    name: str
    definition: WorkflowConfig
    version: str

    @property
    def kind(self) -> str:
        return self.definition.kind

    @property
    def description(self) -> str:
        return self.definition.description

    def to_json(self) -> dict[str, Any]:
        """The definition as plain JSON values (what a run's input carries)."""
        return {"name": self.name, "version": self.version, "definition": _dump(self.definition)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> WorkflowSpec:
        return cls(value["name"], _ADAPTER.validate_python(value["definition"]), value["version"])


def workflow_spec(name: str, definition: WorkflowConfig) -> WorkflowSpec:
    digest = hashlib.sha256(json.dumps(_dump(definition), sort_keys=True).encode()).hexdigest()
    return WorkflowSpec(name, definition, definition.version or f"h-{digest[:12]}")


def _dump(definition: WorkflowConfig) -> dict[str, Any]:
    dumped: dict[str, Any] = definition.model_dump(mode="json")
    return dumped
