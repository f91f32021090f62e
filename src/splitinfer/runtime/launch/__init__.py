"""Starting workers for a cluster's devices.

- ``start``: :func:`~.start.start_workers`, the one entry point for every backend; the ``Launcher`` protocol.
- ``local``: one worker process per ``local`` device (the emulated continuum).
- ``netns``: local workers in network namespaces, link rates enforced by the kernel.
- ``ray``: workers as Ray actors placed by device resources (the ``ray`` extra).
"""
