"""One device's worker process: hosts stages and answers control requests.

Public modules:

- ``worker``: :class:`~.worker.Worker`, its IO, compute and control loops.
- ``config``: :class:`~.config.WorkerConfig` and the flags generated from it.
- ``process``: the worker as a process (``python -m splitinfer.runtime.device``).

Internal (used by the worker only): ``_stages`` (:class:`StageTable`, the one owner of
the installed stages and their links), ``_control`` (deploy, undeploy, info,
time_partition and probe handlers), ``_execution`` (a partition in ONNX Runtime).
"""
