"""Inventory parsing, checked against `ansible-inventory --list` on the same files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansflow.inventory import (
    Host,
    Inventory,
    InventoryError,
    expand_host_pattern,
    ini_value,
    load_inventory,
)

INVENTORIES: dict[str, str] = {
    "basic.ini": """\
# hosts before any section are ungrouped
top1 ansible_host=10.0.0.1 x=1
top2:2200

[web]
web[01:03] http_port=8080 flag=True label="a b" quoted="'1'"
db-[a:c]:2222
rack[1:2]-node[a:b]

[db]
db-a ansible_user=admin   # a trailing comment
alpha[1:10:3]  # a comment
10.0.0.[5:6]

[prod:children]
web
db

[prod:vars]
env=prod
tier=1
x=from_prod

[web:vars]
tier = 2
d = {"a": 1, "b": [1, 2]}
f = 1.5
s = yes
n = None
l = [1, 'two']

[all:vars]
x=from_all
z=3
""",
    "nested.ini": """\
[leaf:children]
early

[early]
e1 own=host

[leaf]
l1
shared

[mid:children]
leaf

[top:children]
mid
other

[other]
shared
o1

[top:vars]
level=top
only_top=1

[mid:vars]
level=mid

[leaf:vars]
level=leaf

[other:vars]
level=other
ansible_group_priority=5

[early:vars]
level=early
""",
    "tie.ini": """\
[a]
h1
[b]
h1
[c]
h1
[a:vars]
v=a
p=a
[b:vars]
v=b
p=b
ansible_group_priority=0
[c:vars]
v=c
""",
    "inv.yml": """\
all:
  vars:
    region: eu
    level: all
  hosts:
    lonely:
    jump.example.com:
      ansible_port: 2022
  children:
    web:
      hosts:
        web[1:3]:
          http_port: 80
        "w-[a:b]:8022":
      vars:
        level: web
    db:
      hosts: db1
      children:
        replicas:
          hosts:
            replica[01:02]:
              ansible_host: 10.1.0.9
              ansible_user: postgres
          vars:
            level: replicas
            nested: {x: 1}
      vars:
        level: db
        nested: {y: 2}
    empty:
prod:
  children:
    web:
    db:
  vars:
    level: prod
    flag: yes
web:
  hosts:
    web1:
      extra: [1, 2]
""",
    "inv.json": json.dumps(
        {
            "all": {"vars": {"a": 1}},
            "app": {
                "hosts": {"app1": {"ansible_host": "192.0.2.1"}, "app2": None},
                "vars": {"a": 2, "b": True},
            },
        }
    ),
}


def _members(listing: dict[str, Any], group: str) -> list[str]:
    """A group's hosts with its descendants', in Ansible's breadth-first order."""
    order, frontier = [group], [group]
    while frontier:
        following = []
        for name in frontier:
            for child in listing.get(name, {}).get("children", []):
                if child not in order:
                    order.append(child)
                    following.append(child)
        frontier = following
    hosts: list[str] = []
    for name in order:
        for host in listing.get(name, {}).get("hosts", []):
            if host not in hosts:
                hosts.append(host)
    return hosts


@pytest.fixture(scope="session")
def inventory_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inventories")
    for name, text in INVENTORIES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="session")
def ansible_listings(
    inventory_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, Any]]]:
    """`ansible-inventory --list` for every file, run in parallel (each takes most of a second)."""
    binary = shutil.which(
        "ansible-inventory", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    )
    if binary is None:
        pytest.skip("ansible-inventory is not installed (pip install ansible-core)")
    home = tmp_path_factory.mktemp("ansible-home")
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
        "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
        "ANSIBLE_NOCOLOR": "1",
    }
    procs = {
        name: subprocess.Popen(
            [binary, "-i", str(inventory_files / name), "--list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for name in INVENTORIES
    }
    listings = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"ansible-inventory failed on {name}: {err.decode()}"
            listings[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    yield listings


@pytest.mark.parametrize("name", sorted(INVENTORIES))
def test_matches_ansible_inventory(
    name: str, inventory_files: Path, ansible_listings: dict[str, dict[str, Any]]
) -> None:
    listing = ansible_listings[name]
    inventory = load_inventory(inventory_files / name)
    expected_vars = listing["_meta"]["hostvars"]
    assert {host: dict(h.vars) for host, h in inventory.hosts.items()} == {
        host: expected_vars.get(host, {}) for host in _members(listing, "all")
    }
    groups = [group for group in listing if group != "_meta"]
    for group in groups:
        expected = _members(listing, group)
        if group == "all":
            # Ansible lists `all` breadth-first by group; ansflow keeps the file's order.
            assert sorted(inventory.groups["all"]) == sorted(expected)
        else:
            assert list(inventory.groups[group]) == expected, group
    assert set(inventory.groups) >= set(groups)


def test_host_fields_and_group_order(inventory_files: Path) -> None:
    inventory = load_inventory(inventory_files / "basic.ini")
    top1 = inventory.hosts["top1"]
    assert (top1.address, top1.port, top1.user) == ("10.0.0.1", None, None)
    assert inventory.hosts["top2"].port == 2200
    db_a = inventory.hosts["db-a"]
    assert (db_a.address, db_a.port, db_a.user) == ("db-a", 2222, "admin")
    assert db_a.groups[0] == "all" and set(db_a.groups) == {"all", "prod", "web", "db"}
    assert inventory.groups["web"][:3] == ("web01", "web02", "web03")
    assert inventory.groups["ungrouped"] == ("top1", "top2")
    assert inventory.groups["all"][:3] == ("top1", "top2", "web01")
    with pytest.raises(TypeError):
        top1.vars["x"] = 2  # type: ignore[index]  # the point: vars are read-only
    replica = load_inventory(inventory_files / "inv.yml").hosts["replica01"]
    assert (replica.address, replica.user) == ("10.1.0.9", "postgres")
    assert hash(replica) == hash(replica)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web[01:03]", ["web01", "web02", "web03"]),
        ("web[1:10:4]", ["web1", "web5", "web9"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("x[a:e:2]", ["xa", "xc", "xe"]),
        ("[:2]n", ["0n", "1n", "2n"]),
        ("r[1:2]n[a:b]", ["r1na", "r1nb", "r2na", "r2nb"]),
        ("plain", ["plain"]),
    ],
)
def test_expand_host_pattern(pattern: str, expected: list[str]) -> None:
    assert expand_host_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-2", -2),
        ("1.5", 1.5),
        ("True", True),
        ("true", "true"),
        ("yes", "yes"),
        ("None", None),
        ("'quoted'", "quoted"),
        ("[1, (2, 3)]", [1, [2, 3]]),
        ("{'a': {1, 2}}", {"a": [1, 2]}),
        ("0777", "0777"),
        ("1j", "1j"),
        ("__import__('os').system('false')", "__import__('os').system('false')"),
        ("(" * 500 + ")" * 500, "(" * 500 + ")" * 500),
    ],
)
def test_ini_value_types(text: str, value: Any) -> None:
    assert ini_value(text) == value


BAD_INI = [
    ("[web]\nweb[1:]\n", 2, "has no end"),
    ("[web]\nok\nweb[01:5]\n", 3, "same number of digits"),
    ("[web]\nweb[3:1]\n", 2, "begins after it ends"),
    ("[web]\nweb[1:2:0]\n", 2, "step"),
    ("[web]\nweb[a:5]\n", 2, "two numbers or two letters"),
    ("[web]\nweb[1:3\n", 2, "unclosed range"),
    ("[prod:children]\nweb\nnope\n[web]\nw1\n", 3, "'nope'"),
    ("[web]\nw1\n\n[db:vars]\nx=1\n", 4, "[db:vars]"),
    ("[web servers]\nw1\n", 1, "invalid section header"),
    ("[web:things]\nw1\n", 1, "unknown type 'things'"),
    ("[web]\nw1 notakeyvalue\n", 2, "expected key=value"),
    ('[web]\nw1 a="unclosed\n', 2, "No closing quotation"),
    ("[web]\nw1:\n", 2, "reserved for a port"),
    ("[web:vars]\nno_equals_sign\n[web]\nw1\n", 2, "expected key=value"),
    ("[a:children]\nb\n[b:children]\na\n", 4, "loop"),
    ("[a]\nh ansible_group_priority=1\n[a:vars]\nansible_group_priority=high\n", 4, "whole"),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD_INI)
def test_ini_errors_have_line_numbers(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    error = caught.value
    assert (error.path, error.line) == (path, line)
    assert words in error.message
    assert str(error).startswith(f"{path}:{line}: ")


BAD_YAML = [
    ("all:\n  hosts:\n    a: [1\n", 4, "invalid YAML"),
    ("all:\n  host:\n    a:\n", 2, "unexpected key 'host'"),
    ("all:\n  children:\n    web:\n      hosts:\n        web[1:]:\n", 5, "has no end"),
    ("all:\n  children:\n    web:\n      hosts:\n        1:\n", 5, "must be a string"),
    ("web: [a, b]\n", 1, "must be a mapping"),
    ("web:\n  hosts:\n    h: 3\n", 3, "must be a mapping"),
    ("plugin: aws_ec2\n", 1, "plugin"),
    ("- a\n- b\n", 1, "mapping of group names"),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD_YAML)
def test_yaml_errors_have_line_numbers(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert words in caught.value.message


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "missing.ini")
    (tmp_path / "empty.yml").write_text("")
    with pytest.raises(InventoryError, match="empty"):
        load_inventory(tmp_path / "empty.yml")
    (tmp_path / "latin1.ini").write_bytes(b"[web]\nw\xe9b\n")
    with pytest.raises(InventoryError, match="UTF-8") as caught:
        load_inventory(tmp_path / "latin1.ini")
    assert caught.value.line == 2
    (tmp_path / "empty.ini").write_text("# nothing\n")
    assert load_inventory(tmp_path / "empty.ini").hosts == {}


def test_hosts_with_shell_characters_in_an_inventory_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[web]\nw1 ansible_host=127.0.0.1\nw2 ansible_host='1.2.3.4;id'\n")
    inventory = load_inventory(path)
    assert [h.name for h in inventory.resolve(["w1"])] == ["w1"]
    with pytest.raises(InventoryError, match=r"address '1\.2\.3\.4;id' holds characters"):
        inventory.resolve(["web"])


def test_format_detected_by_content(tmp_path: Path) -> None:
    yaml_file = tmp_path / "hosts"
    yaml_file.write_text("# comment\nweb:\n  hosts:\n    w1:\n")
    assert load_inventory(yaml_file).groups["web"] == ("w1",)
    ini_file = tmp_path / "inventory.txt"
    ini_file.write_text("w0\n[web]\nw1\n")
    assert load_inventory(ini_file).groups["ungrouped"] == ("w0",)


def test_resolve(inventory_files: Path) -> None:
    inventory = load_inventory(inventory_files / "basic.ini")
    names = [h.name for h in inventory.resolve(["db", "top1", "web01", "all"])]
    assert names[:6] == ["db-a", "alpha1", "alpha4", "alpha7", "alpha10", "10.0.0.5"]
    assert names.count("web01") == 1 and len(names) == len(inventory.hosts)

    [literal] = inventory.resolve(["deploy@10.9.9.9:2222"])
    assert (literal.name, literal.address, literal.port, literal.user) == (
        "10.9.9.9:2222",
        "10.9.9.9",
        2222,
        "deploy",
    )
    [override] = inventory.resolve(["root@db-a:2022"])
    assert (override.name, override.port, override.user) == ("db-a:2022", 2022, "root")
    assert override.vars["env"] == "prod"
    [v6] = inventory.resolve(["[2001:db8::1]:22"])
    assert (v6.name, v6.address, v6.port) == ("[2001:db8::1]:22", "2001:db8::1", 22)
    [dotted] = inventory.resolve(["build.example.com"])
    assert (dotted.address, dotted.port, dotted.user) == ("build.example.com", None, None)


def test_resolve_unknown_names(inventory_files: Path) -> None:
    inventory = load_inventory(inventory_files / "basic.ini")
    with pytest.raises(InventoryError) as caught:
        inventory.resolve(["web01", "wbe"])
    assert "'wbe'" in caught.value.message and "did you mean web" in caught.value.message
    assert caught.value.path == inventory_files / "basic.ini"
    with pytest.raises(InventoryError, match="out of range"):
        inventory.resolve(["web01:70000"])
    with pytest.raises(InventoryError, match="not a valid host"):
        inventory.resolve(["user@bad host:22"])
    # Shell metacharacters would reach ssh_config's `Match exec` (run by a shell) through %h.
    for bad in ("x$(touch pwned)", "-oProxyCommand=x", "a;b", "a`b`", "bad user@h1.example"):
        with pytest.raises(InventoryError, match="holds characters"):
            Inventory().resolve([bad])
    # Without an inventory file, a bare name is a host (perhaps an ssh_config alias).
    [alias] = Inventory().resolve(["bastion"])
    assert alias == Host(name="bastion", address="bastion")
