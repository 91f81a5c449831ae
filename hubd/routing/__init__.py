"""Routing: which next hop each recipient domain goes to."""

from hubd.routing.resolve import HopKind, NextHop, Router, hop_of, redirect_hop
from hubd.routing.routes import RouteTable

__all__ = ["HopKind", "NextHop", "RouteTable", "Router", "hop_of", "redirect_hop"]
