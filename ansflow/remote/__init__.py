"""Where a step's commands run: the local machine, SSH hosts, Jenkins."""
