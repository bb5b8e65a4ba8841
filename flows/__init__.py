"""Prefect flows composing the stage functions (coming with the Prefect issue)."""
