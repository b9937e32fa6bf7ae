"""The daemon: store, scheduler, Ray dispatcher and HTTP API (never imported by the front ends)."""
