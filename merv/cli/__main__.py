"""`python -m merv.cli ...`: the `merv` command without the console script installed."""

from merv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
