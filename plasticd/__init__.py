"""plasticd: a long-running continual-learning daemon around a sparse, rewiring recurrent network."""

__version__ = "0.1.0"
