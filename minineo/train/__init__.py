from .grads import loss_and_grads
__all__ = ["loss_and_grads"]
