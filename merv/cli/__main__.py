"""`python -m merv.cli fit|validate|test --config a.yaml`."""

from merv.cli import main

if __name__ == "__main__":
    main()
