"""Inbound SMTP: sessions on asyncio streams, relay rules, limits, and the replies they give."""
