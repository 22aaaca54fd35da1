"""The stage bodies that dvc.yaml and the Prefect flow call, one module per stage: each reads its
inputs and params, calls pure functions, and writes its outputs atomically.

dvc.yaml lists each module, with the code it calls, as a dependency of its own stage, so editing
one stage's code re-runs that stage and what follows it, nothing else. This package imports
nothing: a stage loads only its own code.
"""
