"""Evaluation: protocols and saved candidates, metrics, and the evaluator every model goes through."""
