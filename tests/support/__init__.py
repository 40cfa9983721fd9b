"""Helpers the tests share: real processes on free loopback ports."""
