"""`python -m merv.eval.action prepare|evaluate ...`."""

from merv.eval.action.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
