"""Pydantic models of the pipeline file (SPEC section 1). No I/O here: the loader feeds them data.

Every model forbids unknown keys; the loader turns those errors into "did you mean" messages using
`field_names_at`, which walks these classes along a validation error's location.
"""

from __future__ import annotations

import itertools
import types
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ansflow.durations import parse_duration

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
SECRET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_MATRIX_INSTANCES = 256


def _duration(value: object) -> float:
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9.]+\s*[a-z]*(\s*[0-9.]+\s*[a-z]*)*\s*$"},
            ],
            "description": "seconds, or a duration such as 30s, 5m, 1h30m",
        }
    ),
]
PositiveInt = Annotated[int, Strict(), Field(ge=1, le=100_000)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=1_000)]
#: Only YAML's `true`/`false` (SPEC: YAML 1.2 booleans); lax pydantic would take "no", "off", 0.
Flag = Annotated[bool, Strict()]
StepId = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=200)]
SecretName = Annotated[str, Field(pattern=SECRET_PATTERN)]
Scalar = str | int | float | bool


def _env_value(value: object) -> object:
    """Environment values are strings; numbers and booleans are written as YAML shows them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
EnvMap = dict[str, EnvValue]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


StrList = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class Model(BaseModel):
    """Base for every model: unknown keys are errors, numbers must be finite, values immutable."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True, populate_by_name=True
    )


# --- targets -------------------------------------------------------------------------------------


class LocalTarget(Model):
    """The machine ansflow runs on (the implicit `local` target)."""

    type: Literal["local"]


class SSHTarget(Model):
    """A fleet of SSH hosts worked on with paramiko."""

    type: Literal["ssh"]
    hosts: Annotated[list[str], Field(min_length=1)]
    user: str | None = None
    port: Annotated[int, Strict(), Field(ge=1, le=65535)] | None = None
    identity_file: str | None = None
    password: str | None = Field(
        default=None,
        description="a ${{ secrets.X }} reference (a declared secret, so it is masked)",
    )
    ssh_config: str | None = None
    known_hosts: Literal["strict", "accept-new", "off"] = "strict"
    known_hosts_file: str | None = None
    forks: PositiveInt = 10
    connect_timeout: Duration = 10.0
    keepalive: Duration = Field(
        default=15.0,
        description=(
            "how often to ask each host for a reply (as OpenSSH's ServerAliveInterval); a host "
            "that answers none of 3 in a row is lost and its step fails; 0 turns this off"
        ),
    )

    @field_validator("password")
    @classmethod
    def _password_is_a_secret(cls, value: str | None) -> str | None:
        return reference_only(
            value,
            ("secrets",),
            "declare a secret (`secrets: [SSH_PASSWORD]`, its value from the environment or "
            "--secrets-file) and write `password: ${{ secrets.SSH_PASSWORD }}`",
        )

    @field_validator("keepalive")
    @classmethod
    def _keepalive_whole_seconds(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (off) or at least 1s")
        return value


def reference_only(value: str | None, contexts: tuple[str, ...], advice: str) -> str | None:
    """A credential must be one `${{ context.NAME }}` reference, never the value itself.

    A literal would be stored with the run's pipeline text and shown as written: only declared
    secrets are masked (SPEC section 1, Secrets).
    """
    if value is None:
        return None
    text = value.strip()
    inner = text[3:-2].strip() if text.startswith("${{") and text.endswith("}}") else ""
    context, _, name = inner.partition(".")
    if context not in contexts or not (name.isascii() and name.isidentifier()):
        forms = " or ".join(f"${{{{ {c}.NAME }}}}" for c in contexts)
        # NOTE: the message says "got" itself so the loader does not repeat the value.
        raise ValueError(
            f"must be a {forms} reference; got a literal value, which would be stored and "
            f"shown unmasked: {advice}"
        )
    return value


class JenkinsTarget(Model):
    """A Jenkins server reached with python-jenkins."""

    type: Literal["jenkins"]
    url: str
    user: str | None = None
    token: str | None = Field(
        default=None,
        description="a ${{ secrets.X }} (or ${{ env.X }}) reference; default $JENKINS_TOKEN",
    )
    verify: Flag = True
    job_prefix: str = "ansflow-"
    timeout: Duration = 30.0

    @field_validator("token")
    @classmethod
    def _token_is_a_reference(cls, value: str | None) -> str | None:
        return reference_only(
            value,
            ("secrets", "env"),
            "declare a secret (`secrets: [JENKINS_TOKEN]`) and write "
            "`token: ${{ secrets.JENKINS_TOKEN }}`, or leave `token` out to use $JENKINS_TOKEN",
        )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "${{" not in value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("job_prefix")
    @classmethod
    def _prefix_folders(cls, value: str) -> str:
        # NOTE: a `/` in the prefix names a folder; the rest is cleaned into the job's name.
        folder, slash, _ = value.rpartition("/")
        if slash and "${{" not in value:
            problem = cls.job_name_problem(folder, "folder")
            if problem is not None:
                raise ValueError(problem)
        return value

    @classmethod
    def job_name_problem(cls, name: str, kind: str = "job") -> str | None:
        """Why `name` (folders separated by `/`) cannot name a Jenkins item; None if it can."""
        # NOTE: what Jenkins refuses in an item name (`Jenkins.checkGoodName`).
        unsafe = "?*\\%!@#$^&|<>[]:;"
        what = "folder" if kind == "folder" else f"folder or {kind}"
        if not name and kind != "folder":
            return "must not be empty"
        for segment in name.split("/"):
            if not segment.strip():
                return (
                    f"has an empty {what} name: separate folders with one `/`, as in "
                    "`team/app`, with none at the start or end"
                )
            if segment.strip() in (".", ".."):
                return f"{segment.strip()!r} is not a {what} name Jenkins allows"
            bad = next((c for c in segment if c in unsafe), None)
            if bad is not None:
                return f"Jenkins does not allow {bad!r} in a {what} name"
            if any(ord(c) < 32 or ord(c) == 127 for c in segment):
                return f"Jenkins does not allow control characters in a {what} name"
        return None


Target = Annotated[
    LocalTarget | SSHTarget | JenkinsTarget,
    Field(discriminator="type"),
]


# --- steps ---------------------------------------------------------------------------------------


def matrix_text(value: Scalar) -> str:
    """A matrix value as it appears in instance ids (`test[python=3.11,debug=true]`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matrix_list(value: object) -> object:
    """One matrix key's values; checked per key so that errors point at the key."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of values")
    for item in value:
        if isinstance(item, dict | list) or item is None:
            raise ValueError("values must be strings, numbers or booleans")
    return value


def _matrix_size(value: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
    if not value:
        raise ValueError("matrix must have at least one key")
    count = 1
    for key, values in value.items():
        count *= len(values)
        texts = [matrix_text(v) for v in values]
        twice = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
        if twice is not None:
            # NOTE: `[1, "1"]` would make two instances with one id.
            raise ValueError(f"matrix key {key!r} lists {twice!r} twice")
    if count > MAX_MATRIX_INSTANCES:
        raise ValueError(
            f"matrix expands to {count} instances; at most {MAX_MATRIX_INSTANCES} are allowed"
        )
    ids: set[str] = set()
    for combo in itertools.product(*value.values()):
        inner = ",".join(f"{k}={matrix_text(v)}" for k, v in zip(value, combo, strict=True))
        if inner in ids:
            raise ValueError(f"two matrix combinations have the same instance id [{inner}]")
        ids.add(inner)
    return value


MatrixValues = Annotated[list[Scalar], BeforeValidator(_matrix_list), Field(min_length=1)]
Matrix = Annotated[
    dict[Annotated[str, Field(pattern=ID_PATTERN)], MatrixValues], AfterValidator(_matrix_size)
]


class StepBase(Model):
    """Fields every step type has (SPEC: common step fields)."""

    id: StepId
    name: str | None = None
    on: str | None = Field(default=None, description="target name; default local")
    needs: list[str] | None = None
    when: str | bool | None = None
    env: EnvMap = Field(default_factory=dict)
    workdir: str | None = None
    timeout: Duration | None = None
    retries: NonNegativeInt | None = None
    retry_delay: Duration | None = None
    continue_on_error: Flag = False
    matrix: Matrix | None = None
    serial: PositiveInt | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.id


class ShellStep(StepBase):
    """`shell` (alias `custom`): a script run by bash, sh, or any interpreter."""

    type: Literal["shell", "custom"] = "shell"
    run: str
    shell: str | None = None


class FetchCodeStep(StepBase):
    """`fetch_code`: git clone or fetch, then checkout a ref."""

    type: Literal["fetch_code"]
    repo: str
    ref: str | None = None
    dest: str | None = None
    depth: PositiveInt | None = None
    submodules: Flag = False


class BuildStep(StepBase):
    """`build`: run, then check and fingerprint the artifacts."""

    type: Literal["build"]
    run: str
    shell: str | None = None
    artifacts: StrList = Field(default_factory=list)


class TestStep(StepBase):
    """`test`: run, then read JUnit XML results."""

    __test__ = False  # NOTE: keeps pytest from collecting this class.

    type: Literal["test"]
    run: str
    shell: str | None = None
    junit: StrList = Field(default_factory=list)


Severity = Literal["info", "low", "medium", "high", "critical"]


class SecurityScanStep(StepBase):
    """`security_scan`: run a scanner, read its report, fail at a severity threshold."""

    type: Literal["security_scan"]
    run: str | None = None
    shell: str | None = None
    report: str
    fail_on: Severity | None = None


class FileSpec(Model):
    """One file (or glob) to upload; a `dest` ending in `/` is a folder."""

    src: str
    dest: str
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_text(cls, value: object) -> object:
        # NOTE: YAML reads `mode: 0644` as the decimal 644; keep the digits as written.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class DeployStep(StepBase):
    """`deploy`: upload files, then run."""

    type: Literal["deploy"]
    files: list[FileSpec] = Field(default_factory=list)
    run: str | None = None
    shell: str | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> DeployStep:
        if not self.files and self.run is None:
            raise ValueError("a deploy step needs `files`, `run`, or both")
        return self


class NotifyStep(StepBase):
    """`notify`: POST to a webhook or run a command with the message."""

    type: Literal["notify"]
    webhook: str | None = None
    command: str | None = None
    message: str = "${{ pipeline.name }} ${{ run.status }}"

    @model_validator(mode="after")
    def _one_channel(self) -> NotifyStep:
        if (self.webhook is None) == (self.command is None):
            raise ValueError("a notify step needs exactly one of `webhook` or `command`")
        return self


class ApprovalStep(StepBase):
    """`approval`: a manual gate (SPEC section 4)."""

    type: Literal["approval"]
    message: str | None = None
    approvers: StrList = Field(default_factory=list)


class JenkinsStep(StepBase):
    """`jenkins`: trigger and follow a job, or keep a managed job whose build step is `run`."""

    type: Literal["jenkins"]
    job: str | None = None
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    run: str | None = None

    @field_validator("job")
    @classmethod
    def _job_name(cls, value: str | None) -> str | None:
        # NOTE: a templated name is checked once rendered, when the step runs.
        if value is not None and "${{" not in value:
            problem = JenkinsTarget.job_name_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _job_or_run(self) -> JenkinsStep:
        if (self.job is None) == (self.run is None):
            raise ValueError("a jenkins step needs exactly one of `job` or `run`")
        return self


class AnsibleStep(StepBase):
    """`ansible`: ansible-playbook against the step's target hosts."""

    type: Literal["ansible"]
    playbook: str
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    tags: StrList = Field(default_factory=list)


STEP_MODELS: dict[str, type[StepBase]] = {
    "shell": ShellStep,
    "fetch_code": FetchCodeStep,
    "build": BuildStep,
    "test": TestStep,
    "security_scan": SecurityScanStep,
    "deploy": DeployStep,
    "notify": NotifyStep,
    "approval": ApprovalStep,
    "jenkins": JenkinsStep,
    "ansible": AnsibleStep,
}
STEP_TYPE_NAMES = [*STEP_MODELS, "custom"]


def _step_tag(value: Any) -> str | None:
    """Which step model validates this mapping: `type`, default shell, `custom` = shell."""
    kind = value.get("type", "shell") if isinstance(value, dict) else getattr(value, "type", None)
    if kind == "custom":
        return "shell"
    return kind if isinstance(kind, str) else None


if TYPE_CHECKING:
    # NOTE: the unions below are built at run time from STEP_MODELS, which a type checker cannot
    # follow; it sees the base classes instead.
    Step: TypeAlias = StepBase
else:
    Step = Annotated[
        Union[tuple(Annotated[model, Tag(name)] for name, model in STEP_MODELS.items())],  # noqa: UP007
        Discriminator(_step_tag),
    ]


class ParallelBlock(Model):
    """`parallel:` members start together; the entry after the block waits for all of them."""

    parallel: Annotated[list[Step], Field(min_length=1)]


def _entry_tag(value: Any) -> str | None:
    if (isinstance(value, dict) and "parallel" in value) or isinstance(value, ParallelBlock):
        return "parallel"
    return _step_tag(value)


if TYPE_CHECKING:
    Entry: TypeAlias = ParallelBlock | StepBase
else:
    Entry = Annotated[
        Union[  # noqa: UP007
            tuple(
                [Annotated[ParallelBlock, Tag("parallel")]]
                + [Annotated[model, Tag(name)] for name, model in STEP_MODELS.items()]
            )
        ],
        Discriminator(_entry_tag),
    ]


class Defaults(Model):
    """Values every step takes unless it sets its own."""

    timeout: Duration | None = None
    retries: NonNegativeInt = 0
    retry_delay: Duration = 1.0
    shell: str | None = None
    workdir: str | None = None


class Pipeline(Model):
    """A whole pipeline file."""

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    env: EnvMap = Field(default_factory=dict)
    secrets: list[SecretName] = Field(default_factory=list)
    concurrency: PositiveInt | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    inventory: str | None = None
    targets: dict[Annotated[str, Field(pattern=ID_PATTERN)], Target] = Field(default_factory=dict)
    steps: Annotated[list[Entry], Field(min_length=1)]

    def iter_steps(self) -> typing.Iterator[tuple[tuple[Any, ...], StepBase]]:
        """Every step with its path in the file (`("steps", 3, "parallel", 0)`), in file order."""
        for index, entry in enumerate(self.steps):
            if isinstance(entry, ParallelBlock):
                for member_index, member in enumerate(entry.parallel):
                    yield ("steps", index, "parallel", member_index), member
            else:
                yield ("steps", index), entry


# --- locating unknown keys -----------------------------------------------------------------------


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _strip(annotation: Any) -> Any:
    """Peel Annotated and Optional so we can look inside containers and models."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def field_names_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model at a pydantic error location (which ends in the unknown key)."""
    annotation: Any = Pipeline
    for part in loc[:-1]:
        annotation = _strip(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                matches = [f for n, f in annotation.model_fields.items() if f.alias == part]
                if not matches:
                    return []
                info = matches[0]
            annotation = info.annotation
        elif origin is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        elif origin in (Union, types.UnionType):
            chosen = None
            for member in typing.get_args(annotation):
                meta = typing.get_args(member)[1:] if typing.get_origin(member) is Annotated else ()
                tags = [m.tag for m in meta if isinstance(m, Tag)]
                base = _strip(member)
                literal = getattr(base, "model_fields", {}).get("type")
                if part in tags or (
                    literal is not None and part in typing.get_args(literal.annotation)
                ):
                    chosen = base
                    break
            if chosen is None:
                return []
            annotation = chosen
        else:
            return []
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _field_names(annotation)
    return []


def _models_built() -> None:
    """Pydantic's plugin lookup has run by now (models are built); see ansflow/__init__.py."""
    import ansflow

    ansflow.restore_environment()


_models_built()
