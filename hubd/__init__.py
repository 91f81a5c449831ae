"""hubd: a pure-Python SMTP hub transport that loses no mail."""

__version__ = "0.1.0"
