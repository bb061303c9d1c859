"""`python -m ansflow` behaves exactly like the `ansflow` command."""

from ansflow.cli import main

if __name__ == "__main__":
    main()
