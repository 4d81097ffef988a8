"""Typed message schemas per task family for P5 `structured` (pydantic)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArithmeticFacts(_Schema):
    values: dict[str, int] = Field(description="variable name -> integer value")


class KVLookupFacts(_Schema):
    pets: dict[str, str] = Field(description="person -> pet")


class ConstraintFacts(_Schema):
    constraints: list[str] = Field(description="each constraint as written, e.g. 'x + y = 5'")


class GraphPathFacts(_Schema):
    roads: list[tuple[str, str]] = Field(description="each road as a pair of town names")


class ProgramFacts(_Schema):
    steps: list[str] = Field(description="each step of the program, e.g. 'sort' or 'map add ?'")


class RelayFacts(_Schema):
    secrets: dict[str, str] = Field(description="kind of secret -> the secret word")


class GenericFacts(_Schema):
    facts: list[str] = Field(description="each relevant fact, short")


SCHEMAS: dict[str, tuple[type[_Schema], str]] = {
    "Arithmetic": (ArithmeticFacts, '{"values": {"a": 3, "c": 7}}'),
    "KVLookup": (KVLookupFacts, '{"pets": {"Nina": "owl", "Omar": "cat"}}'),
    "ConstraintSatisfaction": (ConstraintFacts, '{"constraints": ["x + y = 5", "y is odd"]}'),
    "GraphPath": (GraphPathFacts, '{"roads": [["Riga", "Rome"], ["Rome", "Oslo"]]}'),
    "ProgramSynthesis": (ProgramFacts, '{"steps": ["sort", "map add ?"]}'),
    "SecretRelay": (RelayFacts, '{"secrets": {"colour": "red"}}'),
}


def schema_for(family: str) -> tuple[type[_Schema], str]:
    return SCHEMAS.get(family, (GenericFacts, '{"facts": ["..."]}'))


def schema_text(model: type[BaseModel]) -> str:
    """A one-line description of the schema for the prompt."""
    props = model.model_json_schema()["properties"]
    return (
        "{" + ", ".join(f'"{k}": {v.get("description", v.get("type", ""))}' for k, v in props.items()) + "}"
    )
