"""What runs on a Ray worker: the relaxation method, the tasks and the training loop.

Depends on torch and escnn. Only :mod:`workers.trainable` touches Ray.
"""
