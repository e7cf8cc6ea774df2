"""Errors raised while configuring rewards; both are ``ValueError`` so a CLI can map them to exit code 2."""
from __future__ import annotations


class RewardConfigError(ValueError):
    """A reward could not be built from what the user gave: unknown name or option, or a bad value."""


class RewardModelMissing(RewardConfigError, FileNotFoundError):
    """A reward's model weights are not on this machine; the message names what is missing and how to get it."""
