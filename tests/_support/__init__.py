"""Helpers shared by the test suite, one module per area (not test modules themselves).

- ``store``: small checkpoints, file hashes and forging tools for the store tests;
- ``trees``: the strict, bit-level comparison of restored state trees;
- ``session``: hooks, listeners and a counter that record what a session does;
- ``listeners``: one real training run for listener tests;
- ``reliability``: the zygote, the reference trajectory and the crash-test checks;
- ``child_train``: the training child process the reliability suite kills.
- ``dist_workers`` / ``dist_session``: what each rank of the distributed tests runs.
"""
