"""interplay: sampling studies of Bayesian neural network posteriors (priors x overparametrization)."""

__version__ = "0.1.0"
