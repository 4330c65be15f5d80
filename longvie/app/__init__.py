"""The web app (``python -m longvie.app``): a page over the long-video sampler and the control
extraction tools. It imports the library, never the CLIs.

May import: every other subpackage except ``benchmark``.
"""
