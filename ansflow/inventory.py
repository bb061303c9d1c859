"""Ansible inventories (INI and YAML) read as Ansible reads them, without importing Ansible.

Users bring the inventory they already have, so the rules follow Ansible's `ini` and `yaml`
inventory plugins: the implicit groups `all` and `ungrouped`, `[group:children]` and
`[group:vars]`, host ranges (`web[01:10]`, `db-[a:c]`, `[1:10:2]`), `host:port`, INI values typed
like Python literals, and variable precedence host > child group > parent group > `all` (groups at
the same depth ordered by `ansible_group_priority`, then name). The tests compare this module's
result with `ansible-inventory --list` on the same files.

Deliberate differences from Ansible, all on input Ansible only warns about or silently accepts: an
unexpected key in a YAML group, a YAML group that is not a mapping and an empty or reversed range
are errors here, because a typo there silently drops hosts.
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ansflow.errors import EXIT_BAD_INPUT, AnsflowError

YAML_SUFFIXES = frozenset({".yml", ".yaml", ".json"})
#: Ranges bigger than this are refused: `web[0:99999999]` is a typo, not a fleet.
MAX_RANGE_HOSTS = 100_000

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_PLAIN_HOSTPORT = re.compile(r"^([^:\[\]]+):([0-9]+)$")
_RANGE = r"\[(?:[a-zA-Z]:[a-zA-Z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.UNICODE)
_ANY_RANGE = re.compile(r"\[[^\]]*\]")
_YAML_FIRST_LINE = re.compile(r"^(?:---|%YAML|[^\s\[#;=]+:\s*(?:#.*)?$|\{)")


class InventoryError(AnsflowError):
    """An inventory file that cannot be read, or a host pattern that names nothing in it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Host:
    """One machine as the pipeline sees it; `vars` holds inventory variables after precedence."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    groups: tuple[str, ...] = ()


class Inventory:
    """Hosts and groups; `groups` maps every group to its hosts, children resolved, in order."""

    def __init__(
        self,
        hosts: Mapping[str, Host] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        source: Path | None = None,
    ) -> None:
        self.hosts: dict[str, Host] = dict(hosts or {})
        self.groups: dict[str, tuple[str, ...]] = {
            name: tuple(members) for name, members in (groups or {}).items()
        }
        self.groups.setdefault("all", tuple(self.hosts))
        self.groups.setdefault("ungrouped", ())
        #: The file read, or None for the empty inventory of a pipeline that has none.
        self.source = source

    def resolve(self, patterns: Sequence[str]) -> list[Host]:
        """Hosts for a target's `hosts:` list: host names, groups, `all` and literal addresses.

        A literal (`user@host:port`, `host:port`, a dotted name or an IP address) need not be in
        the inventory; a bare name must be, unless there is no inventory at all (then it is a host
        name, perhaps an ssh_config alias). A literal that names an inventory host keeps that
        host's variables and takes the user and port written, also when a group or the bare
        name lists the host too.
        """
        chosen: dict[str, Host] = {}
        #: The user written in a `user@host` entry, per host name: it wins over the inventory's
        #: (and, later, ssh_config's and the target's), wherever the entry is in the list.
        written_users: dict[str, str] = {}
        for pattern in patterns:
            for host, written in self._resolve_one(pattern):
                kept = chosen.setdefault(host.name, host)
                if not written or host.user is None:
                    continue
                earlier = written_users.setdefault(host.name, host.user)
                if earlier != host.user:
                    raise InventoryError(
                        f"host {host.name!r} is listed with two users, {earlier!r} and "
                        f"{host.user!r}; one host is logged into as one user per target",
                        self.source,
                    )
                if kept.user != host.user:
                    chosen[host.name] = replace(kept, user=host.user)
        for host in chosen.values():
            _check_safe(host, self.source)
        return list(chosen.values())

    def _resolve_one(self, pattern: str) -> list[tuple[Host, bool]]:
        """The hosts a pattern names, each with whether its user and port were written in it."""
        pattern = pattern.strip()
        if not pattern:
            raise InventoryError("empty host name in the target's hosts", self.source)
        if pattern in self.groups:
            return [(self.hosts[name], False) for name in self.groups[pattern]]
        if pattern in self.hosts:
            return [(self.hosts[pattern], False)]
        literal = parse_host_literal(pattern)
        if literal is None:
            if self.source is None:
                return [(Host(name=pattern, address=pattern), False)]
            known = [*self.groups, *self.hosts]
            near = difflib.get_close_matches(pattern, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise InventoryError(
                f"no host or group named {pattern!r} in the inventory{hint}", self.source
            )
        user, address, port = literal
        name = address if port is None else format_host_port(address, port)
        base = self.hosts.get(address)
        if base is None:
            return [(Host(name=name, address=address, port=port, user=user), True)]
        host = Host(
            name=name,
            address=base.address,
            port=port if port is not None else base.port,
            user=user if user is not None else base.user,
            vars=base.vars,
            groups=base.groups,
        )
        return [(host, user is not None)]


#: What a host name, address or user may hold. OpenSSH refuses shell metacharacters in host names
#: for the same reason: ssh_config's `Match exec` and `%h` put the name into a shell command.
_SAFE_NAME = re.compile(r"^(?!-)[\w.:%\[\]-]+$")
_SAFE_USER = re.compile(r"^(?!-)[\w.-]+$")


def _check_safe(host: Host, source: Path | None) -> None:
    for what, value, pattern in (
        ("host name", host.name, _SAFE_NAME),
        ("address", host.address, _SAFE_NAME),
        ("user name", host.user, _SAFE_USER),
    ):
        if value is not None and not pattern.match(value):
            prefix = "" if what == "host name" else f"host {host.name!r}: "
            raise InventoryError(
                f"{prefix}{what} {value!r} holds characters a {what} cannot have", source
            )


def format_host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def parse_host_literal(text: str) -> tuple[str | None, str, int | None] | None:
    """`[user@]host[:port]` as (user, host, port); None for a bare name (no @, :, dot or IP).

    IPv6 addresses take a port only in brackets, `[::1]:2222`, as in Ansible and OpenSSH.
    """
    user: str | None = None
    rest = text
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise InventoryError(f"empty user name in {text!r}")
    port: int | None = None
    match = _BRACKETED_HOSTPORT.match(rest) or _PLAIN_HOSTPORT.match(rest)
    if match:
        rest, port = match.group(1), _parse_port(match.group(2), text)
    elif rest.startswith("[") and rest.endswith("]"):
        rest = rest[1:-1]
    if not rest:
        raise InventoryError(f"empty host name in {text!r}")
    is_ip = _is_ip(rest)
    if user is None and port is None and not is_ip and "." not in rest:
        return None
    if not is_ip and not _HOSTNAME.match(rest):
        raise InventoryError(f"{text!r} is not a valid host name or address")
    return user, rest, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str, where: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise InventoryError(f"port {port} in {where!r} is out of range (1-65535)")
    return port


def load_pipeline_inventory(written: str, pipeline_dir: Path) -> Inventory:
    """The pipeline's `inventory:`; a relative path is the pipeline folder's, `~` is expanded."""
    path = Path(written).expanduser()
    return load_inventory(path if path.is_absolute() else pipeline_dir / path)


def load_inventory(path: Path) -> Inventory:
    """Read an INI or YAML inventory; the format comes from the suffix, else from the content."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InventoryError(f"cannot read the inventory: {error.strerror}", path) from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InventoryError("the inventory is not UTF-8 text", path, line) from error
    if path.suffix.lower() in YAML_SUFFIXES or _looks_like_yaml(text):
        builder = _parse_yaml(text, path)
    else:
        builder = _parse_ini(text, path)
    return builder.finish()


def _looks_like_yaml(text: str) -> bool:
    """INI files start with a host or a [section]; YAML ones with `group:` or `---`."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        return bool(_YAML_FIRST_LINE.match(stripped))
    return False


# -- building ------------------------------------------------------------------------------------


@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    priority: int = 1


class _Builder:
    """The inventory as the parsers add to it; `finish` applies Ansible's implicit rules."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[str, _Group] = {}
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.add_group("all")
        self.add_group("ungrouped")

    def error(self, message: str, line: int | None = None) -> InventoryError:
        return InventoryError(message, self.path, line)

    def add_group(self, name: str) -> _Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(name)
        return group

    def add_host(self, name: str, group: str, port: int | None, line: int | None) -> None:
        if not name:
            raise self.error("empty host name", line)
        host_vars = self.host_vars.setdefault(name, {})
        members = self.groups[group].hosts
        if name not in members:
            members.append(name)
        if port is not None:
            host_vars["ansible_port"] = port

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        if parent == child:
            raise self.error(f"group {parent!r} cannot be its own child", line)
        if child == "all":
            raise self.error("group 'all' cannot be a child of another group", line)
        if child in self._ancestors_or_self(parent):
            raise self.error(
                f"making {child!r} a child of {parent!r} creates a loop of groups", line
            )
        parent_group, child_group = self.groups[parent], self.groups[child]
        if child not in parent_group.children:
            parent_group.children.append(child)
            child_group.parents.append(parent)

    def _ancestors_or_self(self, name: str) -> set[str]:
        seen = {name}
        stack = [name]
        while stack:
            for parent in self.groups[stack.pop()].parents:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def set_group_var(self, group: str, key: str, value: Any, line: int | None) -> None:
        if not key:
            raise self.error("empty variable name", line)
        target = self.groups[group]
        if key == "ansible_group_priority":
            try:
                target.priority = int(value)
            except (TypeError, ValueError):
                raise self.error(
                    f"ansible_group_priority must be a whole number, not {value!r}", line
                ) from None
            return
        _merge_var(target.vars, key, value)

    def set_host_var(self, host: str, key: str, value: Any, line: int | None) -> None:
        if not key:
            raise self.error("empty variable name", line)
        _merge_var(self.host_vars[host], key, value)

    def finish(self) -> Inventory:
        ungrouped = self.groups["ungrouped"]
        for group in list(self.groups.values()):
            if group.name != "all" and not group.parents:
                self.add_child("all", group.name, None)
        for name in self.host_vars:
            direct = [g for g in self.groups.values() if name in g.hosts]
            others = [g for g in direct if g.name not in ("all", "ungrouped")]
            if others and name in ungrouped.hosts:
                ungrouped.hosts.remove(name)
            elif not others and name not in ungrouped.hosts:
                ungrouped.hosts.append(name)
        depth = self._depths()
        hosts: dict[str, Host] = {}
        for name, own_vars in self.host_vars.items():
            member_of = self._groups_of(name)
            ordered = sorted(
                (self.groups[g] for g in member_of),
                key=lambda g: (depth[g.name], g.priority, g.name),
            )
            merged: dict[str, Any] = {}
            for group in ordered:
                merged.update(group.vars)
            merged.update(own_vars)
            hosts[name] = self._host(name, merged, tuple(g.name for g in ordered))
        groups = {name: tuple(self._members(name)) for name in self.groups}
        groups["all"] = tuple(self.host_vars)
        return Inventory(hosts, groups, self.path)

    def _host(self, name: str, merged: dict[str, Any], groups: tuple[str, ...]) -> Host:
        address = _first(merged, "ansible_host", "ansible_ssh_host")
        port = _first(merged, "ansible_port", "ansible_ssh_port")
        user = _first(merged, "ansible_user", "ansible_ssh_user", "ansible_ssh_user_name")
        if port is not None:
            try:
                port = int(port)
            except (TypeError, ValueError):
                raise self.error(f"host {name!r}: ansible_port {port!r} is not a number") from None
            if not 0 < port < 65536:
                raise self.error(f"host {name!r}: ansible_port {port} is out of range")
        return Host(
            name=name,
            address=str(address) if address not in (None, "") else name,
            port=port,
            user=str(user) if user not in (None, "") else None,
            vars=MappingProxyType(merged),
            groups=groups,
        )

    def _groups_of(self, host: str) -> set[str]:
        found: set[str] = set()
        for group in self.groups.values():
            if host in group.hosts:
                found |= self._ancestors_or_self(group.name)
        return found

    def _depths(self) -> dict[str, int]:
        """Longest path from `all`, as Ansible's Group.depth: deeper groups win ties."""
        depth: dict[str, int] = {}

        def visit(name: str) -> int:
            if name not in depth:
                parents = self.groups[name].parents
                depth[name] = max((visit(p) + 1 for p in parents), default=0)
            return depth[name]

        for name in self.groups:
            visit(name)
        return depth

    def _members(self, name: str) -> list[str]:
        """A group's own hosts, then its descendants' in breadth-first order, without repeats."""
        ordered_groups = [name]
        seen = {name}
        frontier = [name]
        while frontier:
            following = []
            for group in frontier:
                for child in self.groups[group].children:
                    if child not in seen:
                        seen.add(child)
                        ordered_groups.append(child)
                        following.append(child)
            frontier = following
        hosts: dict[str, None] = {}
        for group in ordered_groups:
            for host in self.groups[group].hosts:
                hosts.setdefault(host, None)
        return list(hosts)


def _first(values: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if values.get(key) is not None:
            return values[key]
    return None


def _merge_var(target: dict[str, Any], key: str, value: Any) -> None:
    """A mapping set twice on one group or host is merged one level deep, as Ansible does."""
    current = target.get(key)
    if isinstance(current, Mapping) and isinstance(value, Mapping):
        target[key] = {**current, **value}
    else:
        target[key] = value


# -- host patterns -------------------------------------------------------------------------------


def split_host_pattern(pattern: str) -> tuple[str, int | None]:
    """`web[1:3]:2222` -> (`web[1:3]`, 2222); a pattern that is no valid host keeps its colon."""
    match = _BRACKETED_HOSTPORT.match(pattern) or _HOSTPORT.match(pattern)
    if match:
        host, port = match.group(1), int(match.group(2))
        if _valid_host_pattern(host):
            return host, port
    return pattern, None


def _valid_host_pattern(host: str) -> bool:
    if ":" in _ANY_RANGE.sub("", host):
        return _is_ip(_ANY_RANGE.sub("0", host))
    return bool(_HOSTNAME.match(host))


def expand_host_pattern(pattern: str) -> list[str]:
    """Expand every `[begin:end(:step)]` range; raises ValueError with a plain reason."""
    if "[" not in pattern:
        return [pattern]
    head, rest = pattern.split("[", 1)
    if "]" not in rest:
        raise ValueError(f"unclosed range in host pattern {pattern!r}")
    inner, tail = rest.split("]", 1)
    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"host range [{inner}] must be [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    if not end:
        raise ValueError(f"host range [{inner}] has no end")
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not step_text.isdigit() or int(step_text) < 1:
        raise ValueError(f"host range [{inner}] needs a step that is a whole number >= 1")
    step = int(step_text)
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and len(end) != width:
        raise ValueError(f"host range [{inner}]: begin and end must have the same number of digits")
    letters = string.ascii_letters
    values: list[str]
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise ValueError(f"host range [{inner}] begins after it ends")
        values = list(letters[first : last + 1 : step])
    elif begin.isdigit() and end.isdigit():
        if int(begin) > int(end):
            raise ValueError(f"host range [{inner}] begins after it ends")
        count = (int(end) - int(begin)) // step + 1
        if count > MAX_RANGE_HOSTS:
            raise ValueError(
                f"host range [{inner}] makes {count} hosts (at most {MAX_RANGE_HOSTS})"
            )
        values = [str(n).zfill(width) for n in range(int(begin), int(end) + 1, step)]
    else:
        raise ValueError(f"host range [{inner}] must run between two numbers or two letters")
    tails = expand_host_pattern(tail)
    if len(values) * len(tails) > MAX_RANGE_HOSTS:
        raise ValueError(f"host pattern {pattern!r} makes more than {MAX_RANGE_HOSTS} hosts")
    return [head + value + rest_ for value in values for rest_ in tails]


# -- INI -----------------------------------------------------------------------------------------


def _parse_ini(text: str, path: Path) -> _Builder:
    builder = _Builder(path)
    group, state = "ungrouped", "hosts"
    # Ansible lets [g:vars] and [p:children] name groups declared further down the file.
    pending_vars: dict[str, int] = {}
    pending_children: dict[str, tuple[int, list[str]]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION.match(line)
        if section:
            group, kind = section.group(1), section.group(2) or "hosts"
            if kind not in ("hosts", "children", "vars"):
                raise builder.error(
                    f"section [{group}:{kind}] has an unknown type {kind!r} "
                    "(use [name], [name:vars] or [name:children])",
                    number,
                )
            state = kind
            if group not in builder.groups:
                if kind == "vars" and group not in pending_children:
                    pending_vars.setdefault(group, number)
                builder.add_group(group)
            if kind != "vars":
                pending_vars.pop(group, None)
                _declare(builder, group, pending_children)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise builder.error(
                f"invalid section header {line}: a group name cannot contain spaces or ':' "
                "(use [name], [name:vars] or [name:children])",
                number,
            )
        if state == "hosts":
            _ini_host_line(builder, line, group, number)
        elif state == "vars":
            if "=" not in line:
                raise builder.error(f"expected key=value in [{group}:vars], got {line!r}", number)
            key, value = (part.strip() for part in line.split("=", 1))
            builder.set_group_var(group, key, ini_value(value), number)
        else:
            match = _GROUP_NAME.match(line)
            if not match:
                raise builder.error(
                    f"expected a group name in [{group}:children], got {line!r}", number
                )
            child = match.group(1)
            if child in builder.groups and child not in pending_children:
                builder.add_child(group, child, number)
            else:
                _, parents = pending_children.setdefault(child, (number, []))
                parents.append(group)
    for child, (number, parents) in pending_children.items():
        raise builder.error(
            f"[{parents[-1]}:children] names group {child!r}, which is not defined anywhere",
            number,
        )
    for name, number in pending_vars.items():
        raise builder.error(f"[{name}:vars] is for group {name!r}, which is not defined", number)
    return builder


def _declare(builder: _Builder, group: str, pending: dict[str, tuple[int, list[str]]]) -> None:
    """A group named in [p:children] before its own section is attached once it appears."""
    entry = pending.pop(group, None)
    if entry is None:
        return
    number, parents = entry
    for parent in parents:
        builder.add_child(parent, group, number)
        if parent in pending:
            _declare(builder, parent, pending)


def _ini_host_line(builder: _Builder, line: str, group: str, number: int) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as error:
        raise builder.error(f"cannot parse host line {line!r}: {error}", number) from None
    if not tokens:
        return
    pattern, port = split_host_pattern(tokens[0])
    if tokens[0].endswith(":") and port is None:
        raise builder.error(
            f"host {tokens[0]!r} ends in ':', which is reserved for a port (host:port)", number
        )
    if pattern == "---":
        raise builder.error("'---' starts a YAML document; is this a YAML inventory?", number)
    try:
        names = expand_host_pattern(pattern)
    except ValueError as error:
        raise builder.error(str(error), number) from None
    variables: list[tuple[str, Any]] = []
    for token in tokens[1:]:
        if "=" not in token:
            raise builder.error(
                f"expected key=value after the host name, got {token!r} "
                "(quote values that hold spaces)",
                number,
            )
        key, value = token.split("=", 1)
        variables.append((key, ini_value(value)))
    for name in names:
        builder.add_host(name, group, port, number)
        for key, value in variables:
            builder.set_host_var(name, key, value, number)


def ini_value(text: str) -> Any:
    """Type an INI value as Ansible does: a Python literal when it is one, else the text.

    `ast.literal_eval` only builds literals (numbers, strings, booleans, None, and lists, dicts,
    tuples and sets of them); it never looks up names or calls anything, so it is safe on
    untrusted text. Its failures on odd input (deep nesting, huge numbers) leave the text as is.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, complex):
        return str(value)
    if value is Ellipsis:
        return "..."
    return value


# -- YAML ----------------------------------------------------------------------------------------


class _Lines(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key, for error messages."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader plus line numbers of mapping keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Lines:
    loader.flatten_mapping(node)
    mapping = _Lines()
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, path: Path) -> _Builder:
    builder = _Builder(path)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        raise builder.error(f"invalid YAML: {error.problem or error}", line) from None
    except yaml.YAMLError as error:
        raise builder.error(f"invalid YAML: {error}") from None
    if data is None:
        raise builder.error("the inventory is empty")
    if not isinstance(data, dict):
        raise builder.error("a YAML inventory must be a mapping of group names", 1)
    if "plugin" in data:
        raise builder.error(
            "this is an inventory plugin configuration; only static inventories are supported",
            _line(data, "plugin"),
        )
    for name, body in data.items():
        _yaml_group(builder, name, body, _line(data, name))
    return builder


def _line(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "lines", None)
    return lines.get(key) if lines else None


def _yaml_group(builder: _Builder, name: Any, body: Any, line: int | None) -> str:
    if not isinstance(name, str) or not name:
        raise builder.error(f"group name {name!r} must be a non-empty string", line)
    if body is not None and not isinstance(body, dict):
        raise builder.error(
            f"group {name!r} must be a mapping with hosts, vars or children, "
            f"not {type(body).__name__}",
            line,
        )
    builder.add_group(name)
    for key, section in (body or {}).items():
        key_line = _line(body, key)
        if key not in ("hosts", "vars", "children"):
            raise builder.error(
                f"unexpected key {key!r} in group {name!r} (expected hosts, vars or children)",
                key_line,
            )
        if isinstance(section, str):
            section = {section: None}
        if section is None:
            continue
        if not isinstance(section, dict):
            raise builder.error(
                f"{key} of group {name!r} must be a mapping, not {type(section).__name__}",
                key_line,
            )
        if key == "vars":
            for var, value in section.items():
                builder.set_group_var(name, str(var), value, _line(section, var))
        elif key == "children":
            for child, child_body in section.items():
                child_line = _line(section, child)
                child_name = _yaml_group(builder, child, child_body, child_line)
                builder.add_child(name, child_name, child_line)
        else:
            for pattern, host_vars in section.items():
                _yaml_hosts(builder, name, pattern, host_vars, _line(section, pattern))
    return name


def _yaml_hosts(
    builder: _Builder, group: str, pattern: Any, host_vars: Any, line: int | None
) -> None:
    if not isinstance(pattern, str):
        raise builder.error(
            f"host {pattern!r} in group {group!r} must be a string (quote numbers)", line
        )
    if host_vars is not None and not isinstance(host_vars, dict):
        raise builder.error(
            f"variables of host {pattern!r} must be a mapping, not {type(host_vars).__name__}",
            line,
        )
    host, port = split_host_pattern(pattern)
    try:
        names = expand_host_pattern(host)
    except ValueError as error:
        raise builder.error(str(error), line) from None
    for host_name in names:
        builder.add_host(host_name, group, port, line)
        for key, value in (host_vars or {}).items():
            builder.set_host_var(host_name, str(key), value, _line(host_vars, key))
