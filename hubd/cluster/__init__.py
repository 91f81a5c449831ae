"""A local multi-node hubd cluster: its layout, its processes, and their status."""
