"""Helpers shared by the tests, imported as ``helpers.<module>`` (pytest puts ``tests/`` on sys.path).

- ``graph_models``: small ONNX models, each exercising one shape of graph.
- ``runtime_models``: tiny models split into partitions by hand, local clusters, stages.
- ``deploy``: a small zoo model with a made-up profile and a plan (deploy, bench, gateway tests).
- ``gateway``: a session stand-in, a uvicorn server in a thread, raw HTTP, metrics, self-signed certificates.
- ``report_sample``: a real model's blocks, plausible timings, real plans and a bench result.
- ``digits``: a real classifier (scikit-learn's MLP on its digits, exported with skl2onnx) and its partitions.
- ``cli``: running the CLI in process and reading its one-line errors.
"""
