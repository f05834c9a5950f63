"""The OpenAI-compatible ``POST /v1/chat/completions``: the last user message's ``image_url``
part and text become a captioning or a VQA request, and the answer comes back as the assistant's
message.

Which task: ``"model": "caption"`` or ``"vqa"`` says it; otherwise a message with no text, or
whose text asks for a description ("describe ...", "caption ..."), is captioned, and any other
text is a question about the image. The request's ``model`` never names a file: the service
answers with the one model it has loaded.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from openofa.errors import OFAError

_DESCRIBE = re.compile(r"^\s*(please\s+)?(describe|caption|what does (the|this) image (show|describe))\b", re.I)


def parse(body: bytes) -> tuple[str, str, str | None, str]:
    """``(task, image, question, model)`` of a chat request: ``image`` the ``image_url`` string
    (a data: URL, base64 or URL, decoded later under the service's rules)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OFAError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise OFAError("the request body must be a JSON object with messages")
    if data.get("stream"):
        raise OFAError("stream: true is not supported; ask without streaming")
    if data.get("n", 1) != 1:
        raise OFAError("n: only one choice per request is supported")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OFAError("messages must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise OFAError("messages has no user message")
    content = users[-1].get("content")
    texts, images = [], []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise OFAError("an image_url part needs image_url.url (a data: URL or base64)")
                images.append(url)
            else:
                raise OFAError(f"unsupported content part {kind!r}; expected text or image_url")
    else:
        raise OFAError("a user message's content must be a string or a list of parts")
    if len(images) != 1:
        raise OFAError(f"the last user message must hold exactly one image_url part (it holds {len(images)})")
    text = " ".join(t.strip() for t in texts if t.strip())
    model = data.get("model") if isinstance(data.get("model"), str) else ""
    if model in ("caption", "vqa"):
        task = model
    else:
        task = "caption" if not text or _DESCRIBE.match(text) else "vqa"
    if task == "vqa" and not text:
        raise OFAError("vqa: the message has no question")
    return task, images[0], text or None, model


def answer(content: str, model: str, task: str) -> dict[str, Any]:
    """The chat completion object of one answer."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model or task, "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
