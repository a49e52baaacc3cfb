"""google-genai's generate_content replayed above the SDK: the response rebuilt from its recorded JSON.

`generate_content` (with its automatic function calling and continuation loops) sends every request
through `Models._generate_content`, which turns the arguments into a request dict, has
`BaseApiClient.request` send it (google_genai.py journals it there) and builds the result from the
answer. Replayed down there, a call still pays for both conversions, ~300 us. Wrapped at
`_generate_content`, a recorded call is claimed by the key of its arguments (see _rebuild.py) and
its result is built from the recorded answer the way the SDK builds it, minus the checks that only
matter for data the SDK has not seen: fields this SDK release does not know, a response schema to
parse, or an option that asks for the raw HTTP response send the call down to the usual path.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import Slower
from ._rebuild import Api, CannotRebuild

_PARSED = ("response_schema", "response_json_schema", "include_all_fields")  # the SDK parses the text for these


def _setting(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def api(models: ModuleType) -> Api:
    """The Api of `Models._generate_content`; Slower where this SDK release differs from what is known here."""
    try:
        import pydantic

        types = models.types
        convert = {False: models._GenerateContentResponse_from_mldev, True: models._GenerateContentResponse_from_vertex}
        response_type, parameters, http_response = (types.GenerateContentResponse, types._GenerateContentParameters,
                                                    types.HttpResponse)
    except (ImportError, AttributeError) as error:
        raise Slower(f"this google-genai release lacks what replay above it needs ({error})") from None

    def rebuild(resource: Any, kwargs: dict[str, Any], document: Any, headers: dict[str, str]) -> Any:
        if not (isinstance(document, list) and len(document) == 1 and isinstance(document[0], dict)):
            raise CannotRebuild
        client, config = resource._api_client, kwargs.get("config")
        to_python = convert[bool(client.vertexai)]
        obj = None
        if not any(_setting(config, name) is not None for name in _PARSED):
            try:
                # The SDK's own model validation of the answer (extra fields forbidden): an answer it
                # accepts as it is needs none of the clean-up `_from_response` does first.
                obj = response_type.model_validate(to_python(document[0], None, None))
            except pydantic.ValidationError:
                obj = None
        if obj is None:
            model = parameters(model=kwargs["model"], contents=kwargs["contents"], config=config)
            settings = model.config
            obj = response_type._from_response(
                response=to_python(document[0], None, model),
                kwargs={"config": {name: getattr(settings, name, None) for name in _PARSED}} if settings else {})
        # As the journaled HTTP path answers the SDK (google_genai.py).
        obj.sdk_http_response = http_response(headers={"content-type": "application/json"})
        client._verify_response(obj)
        return obj

    def shape(resource: Any) -> Any:
        client = resource._api_client
        return [bool(client.vertexai), getattr(client, "project", None), getattr(client, "location", None)]

    def plain(value: Any) -> Any:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="json", exclude_none=True)
        raise TypeError(type(value).__name__)

    def refuse(kwargs: dict[str, Any]) -> bool:
        # Options of how the request is sent, or a request for the raw HTTP response.
        config = kwargs.get("config")
        return _setting(config, "http_options") is not None or bool(_setting(config, "should_return_http_response"))

    return Api("google_genai", "genai.generateContent", shape, rebuild, lambda value: value is None, plain,
               body="chunks", refuse=refuse)
