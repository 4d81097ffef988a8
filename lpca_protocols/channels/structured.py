"""P5 `structured`: the holder fills a typed JSON schema of its family; validated, sent compactly.

The holder's model is prompted with the schema and an example; its output is
parsed and validated with pydantic and re-serialized without whitespace. An
output that does not validate is not sent (the message is dropped and the
episode's record says why), so the channel never passes off free text as structure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import Field, ValidationError

from lpca_envs import Message
from lpca_protocols.channel import AgentContext, Channel, ChannelOptions
from lpca_protocols.channels._text import generate, text_message
from lpca_protocols.channels.schemas import schema_for, schema_text

_OBJ = re.compile(r"\{.*\}", re.S)


class StructuredOptions(ChannelOptions):
    cap_bytes: int | None = Field(None, ge=0)
    """Optional hard cap in bytes; a structure that does not fit is not sent."""
    max_new_tokens: int = Field(160, ge=1, le=2048)


def parse_structured(family: str, text: str) -> tuple[str | None, str]:
    """Compact validated JSON, or (None, why)."""
    model, _ = schema_for(family)
    m = _OBJ.search(text)
    if not m:
        return None, "no JSON object in the output"
    try:
        obj = model.model_validate(json.loads(m.group(0)))
    except (json.JSONDecodeError, ValidationError) as e:
        return None, f"invalid: {str(e).splitlines()[0][:120]}"
    return json.dumps(obj.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False), ""


class StructuredChannel(Channel):
    name = "structured"
    description = "P5: the holder fills its family's JSON schema (pydantic-validated), sent compactly."
    Options = StructuredOptions

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        idx = [i for i, c in enumerate(ctxs) if not c.is_answerer]
        fields = []
        for i in idx:
            model, example = schema_for(ctxs[i].family)
            fields.append({"schema": schema_text(model), "example": example})
        texts = generate(
            [ctxs[i] for i in idx], "structured", per_ctx=fields, max_new_tokens=self.options.max_new_tokens
        )
        self.last_errors: dict[int, str] = {}
        for i, t in zip(idx, texts):
            compact, why = parse_structured(ctxs[i].family, t)
            if compact is None:
                self.last_errors[i] = why
                continue
            if self.options.cap_bytes is not None and len(compact.encode()) > self.options.cap_bytes:
                self.last_errors[i] = f"structure of {len(compact.encode())} bytes exceeds the cap"
                continue
            out[i] = text_message(ctxs[i], compact, schema=ctxs[i].family)
        return out
