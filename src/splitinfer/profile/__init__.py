"""The profile layer: what blocks, segments and links cost, measured, and the profile file.

- ``timing``: timing a partition with a confidence-interval stopping rule; statistics.
- ``partition_timing``: :class:`PartitionTiming`, the one record of a timed partition.
- ``profiler``: preparing a model (blocks, real intermediate tensors) and profiling one device.
- ``calibration``: the input a model is profiled on, in any of its forms (a data set among them).
- ``blocks``: :func:`cut_as_profiled`, re-cutting a model exactly as a profile recorded it.
- ``links``: probing links and fitting latency + bytes / bandwidth.
- ``segments``: measured segments and the block costs corrected by them.
- ``schema``: the format of ``profile.json`` and its validation.
- ``files``: ``profile.json`` read, written and merged.
- ``problem``: a profile and a cluster as the planner's :class:`~splitinfer.plan.Problem`.
- ``scission``: Scission's benchmark files as a profile.

Profiling through a cluster's workers is the runtime's (:mod:`splitinfer.runtime.profiling`).
"""
