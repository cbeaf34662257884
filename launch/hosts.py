"""Host lists for the launchers that start processes from this machine: `h1:4,h2:4` (horovodrun's
-H) and hostfiles (`host slots=N` per line), and the names that mean this machine.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launch.errors import LaunchError

LOCALHOSTS = ("localhost", "127.0.0.1")


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    slots: int = 1

    def __str__(self):
        return f"{self.name}:{self.slots}"


def parse_hosts(text: str, default_slots: int = 1) -> list[Host]:
    """`h1:4,h2:4` (or `h1,h2` with `default_slots` each) -> hosts; as horovodrun's -H."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, slots = item.partition(":")
        try:
            count = int(slots) if sep else default_slots
        except ValueError:
            raise LaunchError(f"--hosts takes host[:slots],...; Received: {item!r}") from None
        if not name or count < 1:
            raise LaunchError(f"--hosts takes host[:slots] with slots >= 1; Received: {item!r}")
        hosts.append(Host(name, count))
    if not hosts:
        raise LaunchError(f"--hosts lists no host; Received: {text!r}")
    return hosts


def read_hostfile(path: str, default_slots: int = 1) -> list[Host]:
    """A horovodrun/MPI hostfile: `host slots=N` (or `host:N`, or `host`) per line, # comments."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LaunchError(f"cannot read --hostfile {path}: {e.strerror}") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        name, slots = words[0], default_slots
        if ":" in name:
            name, _, text = name.partition(":")
            slots = int(text) if text.isdigit() else -1
        for word in words[1:]:
            if word.startswith("slots="):
                slots = int(word[6:]) if word[6:].isdigit() else -1
        if slots < 1:
            raise LaunchError(f"{path}:{number}: expected `host slots=N`; Received: {line!r}")
        hosts.append(Host(name, slots))
    if not hosts:
        raise LaunchError(f"--hostfile {path} lists no host")
    return hosts


def total_slots(hosts: Sequence[Host]) -> int:
    return sum(h.slots for h in hosts)


def resolve_np(np: int | None, hosts: Sequence[Host]) -> int:
    slots = total_slots(hosts)
    np = slots if np is None else np
    if not 1 <= np <= slots:
        raise LaunchError(f"--np {np} does not fit the {slots} slots of "
                          f"{','.join(map(str, hosts))}")
    return np
