"""Shadow redundancy (XSHADOW): both sides of the protocol, heartbeats and resubmission."""
