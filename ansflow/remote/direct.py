"""When a script is one plain command, start that command itself instead of a shell around it.

Most steps are a single line such as `make test` or `pytest -q`. For those, the shell adds a
process start (about 1.4 ms here) and nothing else: `-e` and `pipefail` cannot change what a
lone command does, and the command would get the same argument list from the shell. Anything the
shell could read differently is left to the shell: quotes, `$`, globs, redirections, `;`, `&`,
`~`, comments, assignments, keywords and builtins, and an environment that changes how the shell
starts or finds commands (`BASH_ENV`, exported functions, a relative or missing `PATH`).
"""

from __future__ import annotations

import os
import re
import shutil

#: Words the shell reads as they are written: no quoting, expansion, globbing or operators.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./,:@%+=-]+")

#: Names a shell runs itself (bash's and dash's builtins and keywords): never looked up in PATH.
SHELL_WORDS = frozenset(
    """
    . : [ [[ ]] { } ! alias bg bind break builtin caller case cd chdir command compgen complete
    compopt continue coproc declare dirs disown do done echo elif else enable esac eval exec exit
    export false fc fg fi for function getopts hash help history if in jobs kill let local logout
    mapfile popd printf pushd pwd read readarray readonly return select set shift shopt source
    suspend test then time times trap true type typeset ulimit umask unalias unset until wait while
    """.split()  # noqa: SIM905 - a word list reads better as text
)

#: Variables that make a shell run code of their own, or print the command, before it runs.
_SHELL_SETUP = ("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS")


def direct_argv(
    script: str, shell: str | None, env: dict[str, str], workdir: str | None
) -> list[str] | None:
    """The command's argument list when running it directly is what the shell would do; else None.

    The program must be found now, as the shell would find it; a missing one is left to the shell,
    so that its "command not found" and exit status 127 are what the user sees.
    """
    if shell not in (None, "", "bash", "sh"):
        return None
    text = script.strip(" \t\n")
    if not text or "\n" in text:
        return None
    words = text.replace("\t", " ").split(" ")
    words = [word for word in words if word]
    if not all(_PLAIN_WORD.fullmatch(word) for word in words):
        return None
    program = words[0]
    if program in SHELL_WORDS or "=" in program:
        return None
    if any(name in env for name in _SHELL_SETUP) or any(k.startswith("BASH_FUNC_") for k in env):
        return None
    if not _findable(program, env, workdir):
        return None
    return words


def _findable(program: str, env: dict[str, str], workdir: str | None) -> bool:
    """Whether the program exists and may be run, looked up as the shell in `workdir` would."""
    if "/" in program:
        path = program if os.path.isabs(program) else os.path.join(workdir or os.getcwd(), program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    search = env.get("PATH")
    if not search:
        return False
    folders = search.split(os.pathsep)
    # NOTE: an empty or relative PATH entry is looked up from the step's folder by the shell but
    # from ours by shutil.which; such a PATH is left to the shell.
    if any(not os.path.isabs(folder) for folder in folders):
        return False
    return shutil.which(program, path=search) is not None
