"""Pickup and replay directories: .eml files dropped on disk, submitted as mail."""

from hubd.pickup.directory import Pickup, PickupLimits
from hubd.pickup.envelope import Refusal, Source, Submission, read_submission

__all__ = ["Pickup", "PickupLimits", "Refusal", "Source", "Submission", "read_submission"]
