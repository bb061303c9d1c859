"""config.xml in and out: the job's kind and behaviour come from the XML, as in Jenkins.

Jenkins decides what an item is from the root element of its config.xml (XStream aliases):
`<project>` is a freestyle job, `<flow-definition>` a Pipeline job, and the Folders plugin's
class name a folder. A body that is not well-formed XML is a 500 from Jenkins; a root it has no
class for is also an error, so an exporter that writes the wrong root finds out here, not in
production.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

FREESTYLE = "freestyle"
PIPELINE = "pipeline"
FOLDER = "folder"

FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
CPS_DEFINITION = "org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"

_ROOTS = {"project": FREESTYLE, "flow-definition": PIPELINE, FOLDER_CLASS: FOLDER}

JAVA_CLASS = {
    FREESTYLE: "hudson.model.FreeStyleProject",
    PIPELINE: "org.jenkinsci.plugins.workflow.job.WorkflowJob",
    FOLDER: FOLDER_CLASS,
}

_PARAM_KINDS = {
    "hudson.model.StringParameterDefinition": "string",
    "hudson.model.PasswordParameterDefinition": "password",
    "hudson.model.TextParameterDefinition": "text",
    "hudson.model.BooleanParameterDefinition": "boolean",
    "hudson.model.ChoiceParameterDefinition": "choice",
}
PARAM_DEF_CLASS = {kind: cls for cls, kind in _PARAM_KINDS.items()}
PARAM_VALUE_CLASS = {
    "string": "hudson.model.StringParameterValue",
    "password": "hudson.model.PasswordParameterValue",
    "text": "hudson.model.TextParameterValue",
    "boolean": "hudson.model.BooleanParameterValue",
    "choice": "hudson.model.StringParameterValue",
}


class ConfigError(Exception):
    """A config.xml Jenkins would refuse; `status` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ParamSpec:
    """A parameter definition of a job."""

    kind: str  # string, password, text, boolean, choice
    name: str
    default: str | bool
    description: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobConfig:
    """What the emulator needs from a config.xml."""

    kind: str
    parameters: tuple[ParamSpec, ...] = ()
    shell_commands: tuple[str, ...] = ()
    unstable_return: int | None = None
    script: str = ""
    sandbox: bool = True
    disabled: bool = False
    concurrent: bool = False
    description: str = ""


def _text(elem: ET.Element | None, default: str = "") -> str:
    if elem is None or elem.text is None:
        return default
    return elem.text


def parse_config(xml: str | bytes) -> JobConfig:
    """Parse a config.xml body into a JobConfig, raising ConfigError as Jenkins would."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(500, f"java.io.IOException: Unable to read: {exc}") from exc
    kind = _ROOTS.get(root.tag)
    if kind is None:
        raise ConfigError(
            500,
            f"com.thoughtworks.xstream.mapper.CannotResolveClassException: {root.tag}",
        )
    params: list[ParamSpec] = []
    props = root.find("properties")
    if props is not None:
        for pdp in props.iter("hudson.model.ParametersDefinitionProperty"):
            defs = pdp.find("parameterDefinitions")
            for d in list(defs) if defs is not None else []:
                pkind = _PARAM_KINDS.get(d.tag)
                if pkind is None:
                    raise ConfigError(
                        500,
                        "com.thoughtworks.xstream.mapper.CannotResolveClassException: " + d.tag,
                    )
                choices: tuple[str, ...] = ()
                if pkind == "choice":
                    choices = tuple(_text(s) for s in d.iter("string"))
                default: str | bool = _text(d.find("defaultValue"))
                if pkind == "boolean":
                    default = _text(d.find("defaultValue")).strip() == "true"
                elif pkind == "choice":
                    default = choices[0] if choices else ""
                params.append(
                    ParamSpec(
                        kind=pkind,
                        name=_text(d.find("name")),
                        default=default,
                        description=_text(d.find("description")),
                        choices=choices,
                    )
                )
    common = {
        "parameters": tuple(params),
        "disabled": _text(root.find("disabled")).strip() == "true",
        "description": _text(root.find("description")),
    }
    if kind == FREESTYLE:
        commands: list[str] = []
        unstable: int | None = None
        builders = root.find("builders")
        for b in list(builders) if builders is not None else []:
            if b.tag != "hudson.tasks.Shell":
                raise ConfigError(
                    500,
                    "com.thoughtworks.xstream.mapper.CannotResolveClassException: " + b.tag,
                )
            commands.append(_text(b.find("command")))
            ur = _text(b.find("unstableReturn")).strip()
            if ur:
                unstable = int(ur)
        return JobConfig(
            kind=kind,
            shell_commands=tuple(commands),
            unstable_return=unstable,
            concurrent=_text(root.find("concurrentBuild")).strip() == "true",
            **common,  # type: ignore[arg-type]
        )
    if kind == PIPELINE:
        definition = root.find("definition")
        if definition is None or definition.get("class") != CPS_DEFINITION:
            cls = definition.get("class") if definition is not None else None
            raise ConfigError(
                500,
                f"emulator: only {CPS_DEFINITION} is implemented (got {cls!r})",
            )
        return JobConfig(
            kind=kind,
            script=_text(definition.find("script")),
            sandbox=_text(definition.find("sandbox"), "false").strip() == "true",
            # Pipeline jobs run concurrently unless disableConcurrentBuilds is set.
            concurrent=True,
            **common,  # type: ignore[arg-type]
        )
    return JobConfig(kind=kind, **common)  # type: ignore[arg-type]


def _params_xml(parameters: tuple[ParamSpec, ...]) -> str:
    if not parameters:
        return "  <properties/>\n"
    defs = []
    for p in parameters:
        cls = PARAM_DEF_CLASS[p.kind]
        default = str(p.default).lower() if isinstance(p.default, bool) else p.default
        extra = ""
        if p.kind == "choice":
            items = "".join(f"<string>{escape(c)}</string>" for c in p.choices)
            extra = (
                '<choices class="java.util.Arrays$ArrayList">'
                f'<a class="string-array">{items}</a></choices>'
            )
            default_xml = ""
        else:
            default_xml = f"<defaultValue>{escape(default)}</defaultValue>"
        defs.append(
            f"          <{cls}>\n"
            f"            <name>{escape(p.name)}</name>\n"
            f"            <description>{escape(p.description)}</description>\n"
            f"            {default_xml}{extra}\n"
            f"          </{cls}>\n"
        )
    return (
        "  <properties>\n"
        "    <hudson.model.ParametersDefinitionProperty>\n"
        "      <parameterDefinitions>\n" + "".join(defs) + "      </parameterDefinitions>\n"
        "    </hudson.model.ParametersDefinitionProperty>\n"
        "  </properties>\n"
    )


def freestyle_xml(
    script: str,
    parameters: tuple[ParamSpec, ...] = (),
    *,
    concurrent: bool = False,
    unstable_return: int | None = None,
) -> str:
    """The config.xml Jenkins itself writes for a freestyle job with one shell step."""
    unstable = (
        f"      <unstableReturn>{unstable_return}</unstableReturn>\n"
        if unstable_return is not None
        else ""
    )
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n"
        "<project>\n"
        "  <description></description>\n"
        "  <keepDependencies>false</keepDependencies>\n"
        + _params_xml(parameters)
        + '  <scm class="hudson.scm.NullSCM"/>\n'
        "  <canRoam>true</canRoam>\n"
        "  <disabled>false</disabled>\n"
        "  <triggers/>\n"
        f"  <concurrentBuild>{str(concurrent).lower()}</concurrentBuild>\n"
        "  <builders>\n"
        "    <hudson.tasks.Shell>\n"
        f"      <command>{escape(script)}</command>\n" + unstable + "    </hudson.tasks.Shell>\n"
        "  </builders>\n"
        "  <publishers/>\n"
        "  <buildWrappers/>\n"
        "</project>\n"
    )


def pipeline_xml(jenkinsfile: str, parameters: tuple[ParamSpec, ...] = ()) -> str:
    """The config.xml of a Pipeline job whose script is inline (CpsFlowDefinition)."""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n"
        '<flow-definition plugin="workflow-job">\n'
        "  <description></description>\n"
        "  <keepDependencies>false</keepDependencies>\n"
        + _params_xml(parameters)
        + f'  <definition class="{CPS_DEFINITION}" plugin="workflow-cps">\n'
        f"    <script>{escape(jenkinsfile)}</script>\n"
        "    <sandbox>true</sandbox>\n"
        "  </definition>\n"
        "  <triggers/>\n"
        "  <disabled>false</disabled>\n"
        "</flow-definition>\n"
    )


def folder_xml() -> str:
    """The config.xml of an empty folder."""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n"
        f'<{FOLDER_CLASS} plugin="cloudbees-folder">\n'
        "  <description></description>\n"
        "  <properties/>\n"
        f"</{FOLDER_CLASS}>\n"
    )
