"""Inbound SMTP: sessions on aiosmtpd, relay rules, limits, and the replies they give."""
