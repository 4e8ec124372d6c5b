"""A persona's HTTP tools (``http_tools:``): functions the model may call that are HTTP requests.

Each entry is checked when the persona loads like every other field: a function name that is
not a built-in's (``end_call``, ``transfer_call``) nor another tool's, parameters in the JSON
Schema subset the Live API takes (``pipelines.tools.json_schema``), an ``http(s)`` URL whose
``{placeholders}`` name parameters, headers whose secret values come from environment
variables (checked set when the loader is handed the server's environment: pydantic's
validation context ``{"environ": mapping}``; this library never reads the environment), and a
``behavior`` the persona's model takes (``model_issues``; the capability table decides).

What the bot says is decided here too, as words the model is given (the model does the
speaking): ``say_while_waiting`` becomes a sentence of the system instruction and of the
function's description ("Before calling X, tell the caller: …"), so the model says it as it
makes the call (a BLOCKING call then holds the conversation until the result; a NON_BLOCKING
one lets it go on). ``say_on_failure`` is carried in the failure's function response
(``say_to_caller`` and an instruction to say exactly those words).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.personas.sections import _Strict, env_var_name, http_url
from pipelines.tools.json_schema import schema_problems

if TYPE_CHECKING:
    from google.genai.types import FunctionDeclaration

    from pipelines.gemini_models import ModelSpec

# Function names the server's own tools use (``pipelines.personas.setup``).
BUILTIN_TOOLS: tuple[str, ...] = ("end_call", "transfer_call")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_FAILURE_TEXT = "I'm sorry, I can't look that up right now."
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class EnvHeader(_Strict):
    """A header value taken from an environment variable: ``{env: APPT_TOKEN, prefix: "Bearer "}``.

    Attributes:
        env: The variable's NAME (the value never goes in a persona file).
        prefix: Text put before the value (``"Bearer "``).
    """

    env: str
    prefix: str = ""

    @field_validator("env")
    @classmethod
    def _env(cls, value: str, info: ValidationInfo) -> str:
        return env_var_name(
            value,
            info,
            example="APPT_TOKEN",
            holds="the header's value",
            fix="<the token> before starting the server, or remove the header",
        )


class HttpTool(_Strict):
    """One HTTP tool (see the module docstring).

    Attributes:
        name: The function name the model calls (letters, digits, ``_``; up to 64).
        description: What it does and when to call it, for the model.
        parameters: Its arguments as a JSON Schema ``object`` (the Live API's subset).
        url: ``http(s)://`` URL; ``{name}`` placeholders take the argument ``name``
            (URL-quoted), which then leaves the query or body.
        method: GET and DELETE send the other arguments as the query string; POST, PUT and
            PATCH as a JSON body.
        headers: Header name -> a literal value, or ``{env: NAME, prefix: "…"}``.
        timeout_secs: The whole call's budget, retries included.
        retries: Further attempts after a connection error, a broken answer or a 5xx/429
            answer (short backoff, within ``timeout_secs``); a 4xx is final.
        say_while_waiting: Words the model says as it calls the tool.
        say_on_failure: Words the model is told to say when the call fails.
        behavior: ``NON_BLOCKING`` (the conversation goes on while the request runs, and the
            result is spoken when the model is idle) or ``BLOCKING``; unset: the model's
            default, as for the built-in tools (``Persona.tools_async``).
    """

    name: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str | EnvHeader] = Field(default_factory=dict)
    timeout_secs: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    say_while_waiting: str | None = None
    say_on_failure: str = DEFAULT_FAILURE_TEXT
    behavior: Literal["BLOCKING", "NON_BLOCKING"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"got {value!r}, expected a function name: a letter or _, then letters, "
                "digits or _ (up to 64), e.g. 'find_slots'"
            )
        if value in BUILTIN_TOOLS:
            raise ValueError(
                f"got {value!r}, which is a built-in tool's name, expected another name "
                f"(the built-ins are {', '.join(BUILTIN_TOOLS)}: configure them under tools:)"
            )
        return value

    @field_validator("method", "behavior", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("description", "say_on_failure")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("got an empty text, expected words")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = schema_problems(value)
        if problems:
            path, message = problems[0]
            where = ".".join(str(p) for p in path) or "(top level)"
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"at {where}: {message}{more}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, example="https://booking.example.com/slots")

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, Mapping):
            return value  # pydantic says what is wrong
        out: dict[str, str | EnvHeader] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not _HEADER.fullmatch(name):
                raise ValueError(f"got header name {name!r}, expected a token like 'X-Api-Key'")
            if name.lower() in ("content-length", "host", "transfer-encoding"):
                raise ValueError(f"got header {name!r}, expected none: the client sets it")
            if isinstance(item, str):
                out[name] = item
                continue
            if not isinstance(item, Mapping):
                raise ValueError(
                    f"{name}: got {item!r}, expected a text or {{env: NAME, prefix: '…'}}"
                )
            try:  # validated here so errors name the header (the loader hides capitalised keys)
                out[name] = EnvHeader.model_validate(item, context=info.context)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in (name, *err["loc"]))
                message = str(err["msg"]).removeprefix("Value error, ")
                raise ValueError(f"{where}: {message}") from None
        return out

    @model_validator(mode="after")
    def _placeholders(self) -> HttpTool:
        props = self.parameters.get("properties", {})
        for name in url_fields(self.url):
            if name not in props:
                known = ", ".join(props) or "none"
                raise ValueError(
                    f"url: got placeholder {{{name}}}, expected a parameter name ({known})"
                )
        return self

    def resolved_headers(self, env_value: Callable[[str], str | None]) -> dict[str, str]:
        """The headers with env values filled in; raises LookupError naming an unset variable."""
        out = {}
        for name, value in self.headers.items():
            if isinstance(value, EnvHeader):
                found = env_value(value.env)
                if not found:
                    raise LookupError(value.env)
                out[name] = value.prefix + found
            else:
                out[name] = value
        return out

    def spoken_description(self) -> str:
        """The description the model gets, with the words to say while waiting."""
        if not self.say_while_waiting:
            return self.description
        return f"{self.description.rstrip()} {waiting_sentence(self)}"


def url_fields(url: str) -> list[str]:
    """The ``{name}`` placeholders of a tool URL."""
    return [f for _, f, _, _ in string.Formatter().parse(url) if f]


def waiting_sentence(tool: HttpTool) -> str:
    """``Before calling X, tell the caller: "…"`` (the emulator and the model both read it)."""
    return f'Before calling {tool.name}, tell the caller: "{tool.say_while_waiting}"'


def _unique(tools: tuple[HttpTool, ...]) -> tuple[HttpTool, ...]:
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise ValueError(f"got the name {tool.name!r} twice, expected each tool once")
        seen.add(tool.name)
    return tools


HttpTools = Annotated[tuple[HttpTool, ...], AfterValidator(_unique)]


def is_async(tool: HttpTool, model_default_async: bool) -> bool:
    """Whether the tool runs NON_BLOCKING (unset: the model's default for tools)."""
    return tool.behavior == "NON_BLOCKING" or (tool.behavior is None and model_default_async)


def model_issues(
    tools: tuple[HttpTool, ...], spec: ModelSpec
) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path, message)`` for each tool the persona's model would refuse."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for i, tool in enumerate(tools):
        path: tuple[str | int, ...] = ("http_tools", i, "behavior")
        if not spec.sync_tools and not spec.async_tools:
            out.append((("http_tools",), f"got tools, expected none: {spec.name} takes no tools"))
            break
        if tool.behavior == "NON_BLOCKING" and not spec.async_tools:
            out.append((path, (
                f"got NON_BLOCKING, expected BLOCKING or no value: {spec.name} takes only "
                "blocking function calls (remove the key, or use a model such as "
                "gemini-3.8-live that runs tools asynchronously)"
            )))  # fmt: skip
        if tool.behavior == "BLOCKING" and not spec.sync_tools:
            out.append((path, (
                f"got BLOCKING, expected NON_BLOCKING or no value: {spec.name} runs every "
                "function call asynchronously (remove the key)"
            )))  # fmt: skip
    return out


def instruction_notes(tools: tuple[HttpTool, ...]) -> str:
    """Lines added to the system instruction for the persona's HTTP tools ('' when none)."""
    lines = [waiting_sentence(t) for t in tools if t.say_while_waiting]
    if tools:
        lines.append(
            "When a function result has say_to_caller, say exactly those words to the caller."
        )
    return "\n".join(lines)


def with_tool_notes(instruction: str, persona: Any) -> str:
    """``instruction`` followed by the persona's ``instruction_notes`` (unchanged when none)."""
    notes = instruction_notes(persona.http_tools)
    return f"{instruction.rstrip()}\n\n{notes}" if notes else instruction


def declarations(
    tools: tuple[HttpTool, ...], behavior: Callable[[HttpTool], str | None]
) -> list[FunctionDeclaration]:
    """The tools as Live API function declarations (``behavior``: the wire value per tool)."""
    from google.genai.types import Behavior, FunctionDeclaration, Schema

    out = []
    for tool in tools:
        wire = behavior(tool)
        out.append(
            FunctionDeclaration(
                name=tool.name,
                description=tool.spoken_description(),
                parameters=Schema.model_validate(tool.parameters),
                behavior=Behavior(wire) if wire else None,
            )
        )
    return out
