"""``python -m pyro_ebm``: the same command line as ``pyro-ebm``."""

from pyro_ebm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
