"""``python -m kubesolo_entrypoints``: the same as the ``kubesolo-update`` console script."""

from kubesolo_entrypoints.cli import main

if __name__ == "__main__":
    main()
