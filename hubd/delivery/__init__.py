"""Delivery: per-next-hop queues, retry and expiry, outbound SMTP and Maildir."""
