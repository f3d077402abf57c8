"""hetsfl: split federated learning over wireless networks with heterogeneous split points."""

__version__ = "0.1.0"
