"""Prefect flows (pokegen.flows): the same stages as dvc.yaml, run as Prefect tasks."""
