"""An example hwquant plugin: one hardware profile (``acme-npu-u8``) and one policy (``acme-centered``).

hwquant finds it through the ``hwquant`` entry point in this package's pyproject.toml; nothing in
hwquant names it. See :mod:`hwquant_example_plugin.plugin` for the two hooks.
"""

from hwquant_example_plugin.policy import acme_centered

__all__ = ["acme_centered"]
