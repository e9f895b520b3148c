"""`python -m tsforge ...` is the `tsforge` console script."""

from tsforge.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
