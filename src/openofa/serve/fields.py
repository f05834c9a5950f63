"""A task's request, from its declared fields (:class:`openofa.tasks.base.Field`), as the command
line's flags are: each input field and option is a JSON key or a form field of the same name.

* JSON: ``{"image": "<base64 or data: URL>", "question": "...", "answers": ["a", "b"]}``;
* multipart form: the image as a file upload (or base64 text), other fields as text; a list
  field is repeated, comma-separated, or a JSON list.

Also the OpenAPI schema of those two bodies, so ``/docs`` shows every task's own fields.
"""

from __future__ import annotations

import json
from typing import Any

from openofa.errors import OFAError
from openofa.tasks import Task

JSON_TYPES = {"text": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
              "int": {"type": "integer"}, "bool": {"type": "boolean"}}
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def task_fields(spec: type[Task]):
    return spec.inputs + spec.options


def _schema(f, form: bool) -> dict[str, Any]:
    if f.type == "image":
        if form:
            return {"type": "string", "format": "binary", "description": "the image file (or base64 text)"}
        return {"type": "string", "description": "the image: base64 text or a data:image/...;base64 URL "
                                                 "(an http(s) URL only where the service allows URLs)"}
    if f.type == "choice":
        out = {"type": "string", "enum": list(f.choices)}
    else:
        out = dict(JSON_TYPES[f.type])
        if form and f.type == "texts":
            out = {"type": "string", "description": "comma-separated, or repeat the field"}
    out["description"] = f.help + (f" ({out['description']})" if "description" in out else "")
    if f.default is not None:
        out["default"] = f.default
    return out


def openapi_body(spec: type[Task]) -> dict[str, Any]:
    """The ``requestBody`` of a task's endpoint: the same fields as JSON or as a multipart form."""
    required = [f.name for f in task_fields(spec) if f.required]

    def obj(form: bool) -> dict[str, Any]:
        return {"type": "object", "required": required, "additionalProperties": False,
                "properties": {f.name: _schema(f, form) for f in task_fields(spec)}}

    return {"required": True, "content": {"application/json": {"schema": obj(False)},
                                          "multipart/form-data": {"schema": obj(True)}}}


def from_json(spec: type[Task], body: bytes) -> dict[str, Any]:
    """The fields of a JSON body (checked: an object, known keys)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OFAError(f"the request body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(data, dict):
        raise OFAError(f"the request body must be a JSON object with {', '.join(f.name for f in task_fields(spec))}")
    _known(spec, data)
    return {k: v for k, v in data.items() if v is not None}


async def from_form(spec: type[Task], form) -> dict[str, Any]:
    """The fields of a multipart (or url-encoded) form: uploads as bytes, text converted by type."""
    _known(spec, form)
    out: dict[str, Any] = {}
    for f in task_fields(spec):
        values = form.getlist(f.name)
        if not values:
            continue
        if f.type == "texts":
            out[f.name] = _texts([v for v in values if isinstance(v, str)], f.name)
            continue
        if len(values) > 1:
            raise OFAError(f"{f.name}: given {len(values)} times; give it once")
        value = values[0]
        if hasattr(value, "read"):  # an upload
            if f.type != "image":
                raise OFAError(f"{f.name}: expected text, got a file upload")
            out[f.name] = (await value.read(), value.filename or f.name)
        elif f.type == "int":
            try:
                out[f.name] = int(value)
            except ValueError:
                raise OFAError(f"{f.name} must be an integer, got {value[:40]!r}") from None
        elif f.type == "bool":
            if value.lower() not in TRUE | FALSE:
                raise OFAError(f"{f.name} must be true or false, got {value[:40]!r}")
            out[f.name] = value.lower() in TRUE
        else:
            out[f.name] = value
    return out


def _texts(values: list[str], name: str) -> list[str]:
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            data = json.loads(values[0])
        except json.JSONDecodeError:
            raise OFAError(f"{name}: not a JSON list of strings") from None
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise OFAError(f"{name}: not a JSON list of strings")
        return data
    if len(values) == 1:
        return [w.strip() for w in values[0].split(",") if w.strip()]
    return [v.strip() for v in values if v.strip()]


def _known(spec: type[Task], keys) -> None:
    names = {f.name for f in task_fields(spec)}
    unknown = sorted(k for k in keys if k not in names)
    if unknown:
        raise OFAError(f"{spec.name}: unknown field(s) {', '.join(map(repr, unknown[:5]))}; "
                       f"expected {', '.join(sorted(names))}")


def split(spec: type[Task], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(inputs, options)`` of a request's values, each checked against its field's type, with
    every required field present (images must already be decoded)."""
    inputs = {f.name: values[f.name] for f in spec.inputs if f.name in values}
    options = {f.name: values[f.name] for f in spec.options if f.name in values}
    for f in task_fields(spec):
        if f.required and values.get(f.name) is None:
            raise OFAError(f"{spec.name}: no {f.name} given")
        if f.name in values:
            f.check(spec.name, "", values[f.name])
    return inputs, options
