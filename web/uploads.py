"""A body that is either a JSON document or a file uploaded in a form (field `file`): the batch
and the workflow routes take both."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

import json_body
from errors import InvalidRequest, UnsupportedMediaType


async def file_or_json(
    request: Request,
    what: str,
    refusal: str,
    is_json: Callable[[str], bool] = json_body.is_json,
) -> tuple[bytes, str]:
    """The bytes of the upload or of the JSON body, and the words that name them in an error
    ("The uploaded file 'x.json'", "The request body"). `what` names the file a form must
    carry; `refusal` starts the 415 for any other Content-Type (`is_json` says which are JSON:
    by default FastAPI's rule, which takes a body without one)."""
    content_type = json_body.media_type(request.headers.get("content-type"))
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest(f"Upload the {what} in a form field named 'file'")
        return await upload.read(), f"The uploaded file {upload.filename!r}"
    if is_json(content_type):
        return await request.body(), "The request body"
    raise UnsupportedMediaType(f"{refusal}, not {content_type or 'a body without Content-Type'}")
