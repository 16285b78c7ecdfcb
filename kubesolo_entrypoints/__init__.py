"""The entrypoints of kubesolo-update: the composition root and what the outside world calls.

* :mod:`~kubesolo_entrypoints.facade`: the library API for provisioning tools
  (``agent_from_config``, ``memory_agent``; nothing prints, nothing exits);
* :mod:`~kubesolo_entrypoints.cli`: the ``kubesolo-update`` command (typer),
  with :mod:`~kubesolo_entrypoints.render` (what it prints),
  :mod:`~kubesolo_entrypoints.exitcodes`, :mod:`~kubesolo_entrypoints.config`
  (with :mod:`~kubesolo_entrypoints.confvalues`) and
  :mod:`~kubesolo_entrypoints.trust` (signed or unsigned, why a release is held back);
* :mod:`~kubesolo_entrypoints.bootstrap`: the one composition root;
* :mod:`~kubesolo_entrypoints.metrics`, :mod:`~kubesolo_entrypoints.demo`,
  :mod:`~kubesolo_entrypoints.simulate`, :mod:`~kubesolo_entrypoints.cloudinit`:
  the other commands' bodies;
* :mod:`~kubesolo_entrypoints.publisher`: the ``kubesolo-release`` command
  (a TUF repository from an image, with python-tuf's Metadata API).
"""

__all__ = [
    "bootstrap",
    "cli",
    "cloudinit",
    "config",
    "confvalues",
    "demo",
    "exitcodes",
    "facade",
    "metrics",
    "publisher",
    "render",
    "simulate",
    "trust",
]
